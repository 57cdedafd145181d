//! The immutable fallback plan of one request, and the walk over it.
//!
//! Owns: which group comes next after a group fails. The walk is depth-first (a fallback's
//! own fallbacks come before the next sibling), never visits a group twice, stops after
//! `max_fallbacks` fallback groups, picks the list by failure class (context-window and
//! content-policy lists do not fall through to the generic list), and skips groups the
//! key may not use, reporting each skip.
//!
//! Does not own retries inside a group (`attempt`, `route`) nor the settings themselves
//! (`policy`). The plan is built once from [`EffectiveSettings`]; both modes walk it.

use std::sync::Arc;

use crate::catalog::{GroupId, WildcardServe};
use crate::classify::FallbackRoute;
use crate::policy::{EffectiveSettings, FallbackTable, Level};

/// Which list a fallback link came from (for traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Fallbacks,
    ContextWindow,
    ContentPolicy,
    Default,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Fallbacks => "fallbacks",
            ListKind::ContextWindow => "context_window_fallbacks",
            ListKind::ContentPolicy => "content_policy_fallbacks",
            ListKind::Default => "default_fallbacks",
        }
    }
}

/// Why a link was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The key (or its team) may not use the target group.
    NotAllowed,
    /// The target was already tried in this request.
    AlreadyVisited,
    /// `max_fallbacks` groups have already been visited.
    MaxFallbacks,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAllowed => "not_allowed",
            SkipReason::AlreadyVisited => "already_visited",
            SkipReason::MaxFallbacks => "max_fallbacks",
        }
    }
}

/// A link from a failed group to a fallback group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub from: GroupId,
    pub to: GroupId,
    pub list: ListKind,
}

/// The frozen plan: primary group, settings, and what the key may use.
#[derive(Debug, Clone)]
pub struct FallbackPlan {
    pub primary: GroupId,
    pub settings: Arc<EffectiveSettings>,
    allowed: Arc<[bool]>,
    /// Set when a wildcard group serves the primary (see [`FallbackPlan::wildcard`]).
    wildcard: Option<WildcardServe>,
    /// The group a config fallback to the requested name would reach (a model the wildcard
    /// group serves, see `Catalog::wildcard_target`): the same model, so visited already.
    primary_alias: Option<GroupId>,
}

impl FallbackPlan {
    pub fn new(
        primary: GroupId,
        settings: Arc<EffectiveSettings>,
        allowed: Arc<[bool]>,
    ) -> FallbackPlan {
        assert!(
            allowed.get(primary.0 as usize).copied().unwrap_or(false),
            "admission must refuse a primary group the key may not use"
        );
        FallbackPlan {
            primary,
            settings,
            allowed,
            wildcard: None,
            primary_alias: None,
        }
    }

    /// The plan of a request that a wildcard group serves. Admission checked the requested
    /// name against the key's allow-lists (the wildcard group's own name need not be on
    /// them). Fallback lists are looked up by the requested name, never by the pattern,
    /// as LiteLLM does (`litellm/router.py`, `Router.async_function_with_fallbacks_common_utils`
    /// passes `kwargs["model"]`, the requested name, to `get_fallback_model_group`).
    pub fn for_wildcard(
        primary: GroupId,
        served: WildcardServe,
        settings: Arc<EffectiveSettings>,
        allowed: Arc<[bool]>,
    ) -> FallbackPlan {
        FallbackPlan {
            primary,
            settings,
            allowed,
            wildcard: Some(served),
            primary_alias: None,
        }
    }

    /// Marks `group` as the primary under another name (see `primary_alias`): LiteLLM
    /// skips a fallback equal to the requested model (`run_async_fallback`:
    /// `if mg == original_model_group: continue`).
    pub fn with_primary_alias(mut self, group: Option<GroupId>) -> FallbackPlan {
        self.primary_alias = group;
        self
    }

    /// The requested name and captures when a wildcard group serves the primary.
    pub fn wildcard(&self) -> Option<&WildcardServe> {
        self.wildcard.as_ref()
    }

    /// `table`'s list for `group`: by the requested name for a wildcard-served primary.
    fn lookup<'t>(&self, table: &'t FallbackTable, group: GroupId) -> Option<&'t [GroupId]> {
        self.lookup_entry(table, group).map(|(list, _)| list)
    }

    /// [`Plan::lookup`], and whether the list is the `*` entry's.
    fn lookup_entry<'t>(
        &self,
        table: &'t FallbackTable,
        group: GroupId,
    ) -> Option<(&'t [GroupId], bool)> {
        match &self.wildcard {
            Some(w) if group == self.primary => table.lookup_name_entry(&w.requested),
            _ => table.lookup_entry(group),
        }
    }

    /// Whether a `content_policy_fallbacks` list has somewhere to send this group: then a
    /// `finish_reason: content_filter` is a failure to route around; otherwise it is the
    /// answer.
    pub fn content_policy_applies(&self, group: GroupId) -> bool {
        let s = &self.settings;
        !s.disable_fallbacks.value
            && s.content_policy_fallbacks
                .value
                .as_ref()
                .and_then(|t| self.lookup(t, group))
                .is_some_and(|list| !list.is_empty())
    }

    pub fn allows(&self, group: GroupId) -> bool {
        self.allowed.get(group.0 as usize).copied().unwrap_or(false)
    }

    /// The fallback list for `group` after a failure routed `route`, and which setting it
    /// came from. Empty when fallbacks are disabled or nothing applies.
    pub fn list_for(&self, group: GroupId, route: FallbackRoute) -> (&[GroupId], ListKind) {
        let s = &self.settings;
        if s.disable_fallbacks.value {
            return (&[], ListKind::Fallbacks);
        }
        let specific = match route {
            FallbackRoute::NoFallback => return (&[], ListKind::Fallbacks),
            FallbackRoute::Generic => None,
            FallbackRoute::ContextWindow => {
                Some((&s.context_window_fallbacks.value, ListKind::ContextWindow))
            }
            FallbackRoute::ContentPolicy => {
                Some((&s.content_policy_fallbacks.value, ListKind::ContentPolicy))
            }
        };
        if let Some((Some(table), kind)) = specific {
            // The specific setting exists: it alone decides, even if it has no entry here.
            return (self.lookup(table, group).unwrap_or(&[]), kind);
        }
        // `default_fallbacks` is the `*` entry by another name: LiteLLM appends it to the
        // table as `{"*": [...]}`, and the last `*` wins (`get_fallback_model_group`). Set at
        // the same level as `fallbacks`, or at one that outranks it (a key's, against the
        // gateway's table), it beats that table's own `*` (an entry for the group itself
        // still wins: it names the group).
        let defaults_outrank =
            s.default_fallbacks.value.is_some() && s.default_fallbacks.from >= s.fallbacks.from;
        if let Some((list, star)) = s
            .fallbacks
            .value
            .as_deref()
            .and_then(|t: &FallbackTable| self.lookup_entry(t, group))
        {
            if !(star && defaults_outrank) {
                return (list, ListKind::Fallbacks);
            }
        }
        match &s.default_fallbacks.value {
            Some(list) => (list, ListKind::Default),
            None => (&[], ListKind::Fallbacks),
        }
    }

    /// Level that supplied the generic `fallbacks` (for traces and error messages).
    pub fn fallbacks_from(&self) -> Level {
        self.settings.fallbacks.from
    }

    /// Starts a walk. The primary group counts as visited.
    pub fn walk(&self) -> PlanWalk<'_> {
        PlanWalk {
            plan: self,
            stack: Vec::new(),
            visited: vec![self.primary],
            fallbacks_taken: 0,
        }
    }

    /// The order groups would be tried in if every group failed with a generic failure.
    pub fn generic_chain(&self) -> Vec<GroupId> {
        let mut walk = self.walk();
        let mut chain = vec![self.primary];
        walk.group_failed(self.primary, FallbackRoute::Generic);
        while let Some(link) = walk.next(&mut |_, _| {}) {
            chain.push(link.to);
            walk.group_failed(link.to, FallbackRoute::Generic);
        }
        chain
    }
}

#[derive(Clone)]
struct Frame<'p> {
    from: GroupId,
    list: &'p [GroupId],
    kind: ListKind,
    pos: usize,
}

/// The mutable state of walking a plan: a depth-first stack of lists.
#[derive(Clone)]
pub struct PlanWalk<'p> {
    plan: &'p FallbackPlan,
    stack: Vec<Frame<'p>>,
    visited: Vec<GroupId>,
    fallbacks_taken: u32,
}

impl<'p> PlanWalk<'p> {
    /// Records that `group` has failed for good (retries exhausted or not allowed) with a
    /// failure routed `route`; its fallbacks are tried next, before any sibling's.
    pub fn group_failed(&mut self, group: GroupId, route: FallbackRoute) {
        let (list, kind) = self.plan.list_for(group, route);
        if !list.is_empty() {
            self.stack.push(Frame {
                from: group,
                list,
                kind,
                pos: 0,
            });
        }
    }

    /// Whether a content-policy failure of `group` would be routed around now: a
    /// `content_policy_fallbacks` list names somewhere for it (see
    /// [`FallbackPlan::content_policy_applies`]) and the walk, after that failure, reaches a
    /// group that can serve (`servable`: one with a deployment not cooling), allowed by the
    /// key, not visited, within `max_fallbacks` and within the `links_allowed` links the
    /// request may still take (what `num_retries_per_request` leaves). A group with every
    /// deployment cooling is passed over as the walk passes it (skipped without a call, its
    /// own fallbacks next), and the link to it counts. Otherwise `finish_reason:
    /// content_filter` is the answer: an error nothing can route around would only take the
    /// provider's answer from the client.
    pub fn content_policy_would_route(
        &self,
        group: GroupId,
        links_allowed: u32,
        servable: &mut dyn FnMut(GroupId) -> bool,
    ) -> bool {
        if !self.plan.content_policy_applies(group) {
            return false;
        }
        let mut probe = self.clone();
        probe.group_failed(group, FallbackRoute::ContentPolicy);
        for _ in 0..links_allowed {
            let Some(link) = probe.next(&mut |_, _| {}) else {
                return false;
            };
            if servable(link.to) {
                return true;
            }
            probe.group_failed(link.to, FallbackRoute::Generic);
        }
        false
    }

    /// The next group to fall back to, reporting every link it skips to `skipped`.
    pub fn next(&mut self, skipped: &mut dyn FnMut(Link, SkipReason)) -> Option<Link> {
        while let Some(frame) = self.stack.last_mut() {
            let Some(&to) = frame.list.get(frame.pos) else {
                self.stack.pop();
                continue;
            };
            frame.pos += 1;
            let link = Link {
                from: frame.from,
                to,
                list: frame.kind,
            };
            if self.visited.contains(&to) || Some(to) == self.plan.primary_alias {
                skipped(link, SkipReason::AlreadyVisited);
                continue;
            }
            if !self.plan.allows(to) {
                skipped(link, SkipReason::NotAllowed);
                continue;
            }
            if self.fallbacks_taken >= self.plan.settings.max_fallbacks.value {
                skipped(link, SkipReason::MaxFallbacks);
                self.stack.clear();
                return None;
            }
            self.visited.push(to);
            self.fallbacks_taken += 1;
            return Some(link);
        }
        None
    }

    /// Whether a group whose current `order` tier failed with a failure routed `route` may
    /// fall back to its next tier: the failure falls back through the generic list (LiteLLM
    /// skips order-based fallbacks for context-window and content-policy errors, and
    /// Switchback never falls back on a `bad_request` unless `fallback_on_bad_request`),
    /// fallbacks are not disabled, and `max_fallbacks` is not reached (a tier counts as a
    /// fallback, as LiteLLM's `fallback_depth` counts it). See
    /// `litellm/router.py`, `Router.async_function_with_fallbacks_common_utils`.
    pub fn order_fallback_allowed(&self, route: FallbackRoute) -> bool {
        route == FallbackRoute::Generic
            && !self.plan.settings.disable_fallbacks.value
            && self.fallbacks_taken < self.plan.settings.max_fallbacks.value
    }

    /// Counts an order-based fallback taken (see [`PlanWalk::order_fallback_allowed`]).
    pub fn order_fallback_taken(&mut self) {
        assert!(
            self.fallbacks_taken < self.plan.settings.max_fallbacks.value,
            "an order-based fallback is taken only while max_fallbacks allows one"
        );
        self.fallbacks_taken += 1;
    }

    pub fn fallbacks_taken(&self) -> u32 {
        self.fallbacks_taken
    }

    pub fn visited(&self) -> &[GroupId] {
        &self.visited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::{FallbackEntry, GatewayConfig, RouterSettings};
    use crate::policy::{Levels, Overrides};

    fn catalog(groups: &[&str]) -> Catalog {
        let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
        for g in groups {
            yaml.push_str(&format!("  - {{model_name: {g}, litellm_params: {{model: {g}, api_base: \"http://p/v1\"}}}}\n"));
        }
        Catalog::new(&GatewayConfig::load("t.yaml", &yaml).unwrap()).unwrap()
    }

    fn plan_with(
        c: &Catalog,
        primary: &str,
        s: RouterSettings,
        allowed: Option<&[&str]>,
    ) -> FallbackPlan {
        let request: Overrides = c.overrides(&s).unwrap();
        let settings = Levels {
            request: Some(&request),
            key: None,
            team: None,
            gateway: &c.gateway,
        }
        .resolve(&c.limits);
        let allowed: Arc<[bool]> = match allowed {
            None => c.all_allowed(),
            Some(list) => c
                .groups
                .iter()
                .map(|g| list.contains(&g.name.as_str()))
                .collect(),
        };
        FallbackPlan::new(c.group_id(primary).unwrap(), Arc::new(settings), allowed)
    }

    fn names(c: &Catalog, ids: &[GroupId]) -> Vec<String> {
        ids.iter().map(|g| c.group(*g).name.clone()).collect()
    }

    fn entries(pairs: &[(&str, &[&str])]) -> Option<Vec<FallbackEntry>> {
        Some(
            pairs
                .iter()
                .map(|(g, to)| FallbackEntry::new(*g, to))
                .collect(),
        )
    }

    #[test]
    fn depth_first_with_nested_fallbacks() {
        let c = catalog(&["a", "b", "c", "d", "e"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["e"])]),
            ..Default::default()
        };
        let p = plan_with(&c, "a", s, None);
        assert_eq!(names(&c, &p.generic_chain()), ["a", "b", "d", "c", "e"]);
    }

    #[test]
    fn cycles_visit_each_group_once() {
        let c = catalog(&["a", "b"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b"]), ("b", &["a"])]),
            ..Default::default()
        };
        let p = plan_with(&c, "a", s, None);
        let mut skipped = Vec::new();
        let mut walk = p.walk();
        walk.group_failed(p.primary, FallbackRoute::Generic);
        let first = walk.next(&mut |l, r| skipped.push((l, r))).unwrap();
        assert_eq!(c.group(first.to).name, "b");
        walk.group_failed(first.to, FallbackRoute::Generic);
        assert_eq!(walk.next(&mut |l, r| skipped.push((l, r))), None);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].1, SkipReason::AlreadyVisited);
    }

    #[test]
    fn a_content_filter_is_routed_around_only_where_its_fallback_can_be_taken() {
        let c = catalog(&["a", "lenient", "other"]);
        let s = RouterSettings {
            content_policy_fallbacks: entries(&[("a", &["lenient"])]),
            ..Default::default()
        };
        let a = c.group_id("a").unwrap();
        let open = plan_with(&c, "a", s.clone(), None);
        assert!(
            open.walk()
                .content_policy_would_route(a, u32::MAX, &mut |_| true)
        );
        let barred = plan_with(&c, "a", s.clone(), Some(&["a", "other"]));
        assert!(barred.content_policy_applies(a), "the list names a group");
        assert!(
            !barred
                .walk()
                .content_policy_would_route(a, u32::MAX, &mut |_| true),
            "the key may not use it: the filtered answer is the answer"
        );
        let no_depth = RouterSettings {
            max_fallbacks: Some(0),
            ..s
        };
        assert!(
            !plan_with(&c, "a", no_depth, None)
                .walk()
                .content_policy_would_route(a, u32::MAX, &mut |_| true)
        );
        let lenient = c.group_id("lenient").unwrap();
        assert!(
            !open
                .walk()
                .content_policy_would_route(a, u32::MAX, &mut |g| g != lenient),
            "every deployment of the fallback cooling: nothing can serve"
        );
        assert!(
            !open.walk().content_policy_would_route(a, 0, &mut |_| true),
            "num_retries_per_request spent: no link may be taken"
        );
    }

    #[test]
    fn max_fallbacks_bounds_the_walk() {
        let c = catalog(&["a", "b", "c", "d"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b", "c", "d"])]),
            max_fallbacks: Some(2),
            ..Default::default()
        };
        assert_eq!(
            names(&c, &plan_with(&c, "a", s.clone(), None).generic_chain()),
            ["a", "b", "c"]
        );
        let s = RouterSettings {
            max_fallbacks: Some(0),
            ..s
        };
        assert_eq!(
            names(&c, &plan_with(&c, "a", s, None).generic_chain()),
            ["a"]
        );
    }

    #[test]
    fn order_fallbacks_follow_the_generic_route_and_share_max_fallbacks() {
        let c = catalog(&["a", "b", "c"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b", "c"])]),
            max_fallbacks: Some(2),
            ..Default::default()
        };
        let plan = plan_with(&c, "a", s.clone(), None);
        let mut walk = plan.walk();
        for route in [
            FallbackRoute::NoFallback,
            FallbackRoute::ContextWindow,
            FallbackRoute::ContentPolicy,
        ] {
            assert!(!walk.order_fallback_allowed(route), "{route:?}");
        }
        assert!(walk.order_fallback_allowed(FallbackRoute::Generic));
        walk.order_fallback_taken();
        walk.group_failed(plan.primary, FallbackRoute::Generic);
        let link = walk.next(&mut |_, _| {}).expect("one fallback left");
        assert_eq!(c.group(link.to).name, "b");
        assert!(!walk.order_fallback_allowed(FallbackRoute::Generic));
        walk.group_failed(link.to, FallbackRoute::Generic);
        let mut skipped = Vec::new();
        assert_eq!(walk.next(&mut |l, r| skipped.push((l, r))), None);
        assert_eq!(skipped[0].1, SkipReason::MaxFallbacks);
        let disabled = RouterSettings {
            disable_fallbacks: Some(true),
            ..s
        };
        let plan = plan_with(&c, "a", disabled, None);
        assert!(!plan.walk().order_fallback_allowed(FallbackRoute::Generic));
    }

    #[test]
    fn context_window_list_does_not_fall_through() {
        let c = catalog(&["a", "b", "big"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b"])]),
            context_window_fallbacks: entries(&[("b", &["big"])]),
            ..Default::default()
        };
        let p = plan_with(&c, "a", s, None);
        let (list, kind) = p.list_for(c.group_id("a").unwrap(), FallbackRoute::ContextWindow);
        assert!(
            list.is_empty(),
            "a has no context-window entry, and the generic list must not be used"
        );
        assert_eq!(kind, ListKind::ContextWindow);
        let (list, _) = p.list_for(c.group_id("b").unwrap(), FallbackRoute::ContextWindow);
        assert_eq!(names(&c, list), ["big"]);
        // Without the setting, context-window failures use the generic list.
        let p = plan_with(
            &c,
            "a",
            RouterSettings {
                fallbacks: entries(&[("a", &["b"])]),
                ..Default::default()
            },
            None,
        );
        let (list, kind) = p.list_for(c.group_id("a").unwrap(), FallbackRoute::ContextWindow);
        assert_eq!(
            (names(&c, list), kind),
            (vec!["b".to_string()], ListKind::Fallbacks)
        );
    }

    #[test]
    fn content_policy_list_is_separate() {
        let c = catalog(&["a", "b", "safe"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b"])]),
            content_policy_fallbacks: entries(&[("a", &["safe"])]),
            ..Default::default()
        };
        let p = plan_with(&c, "a", s, None);
        let (list, kind) = p.list_for(c.group_id("a").unwrap(), FallbackRoute::ContentPolicy);
        assert_eq!(
            (names(&c, list), kind),
            (vec!["safe".to_string()], ListKind::ContentPolicy)
        );
    }

    #[test]
    fn disallowed_groups_are_skipped_and_reported() {
        let c = catalog(&["a", "b", "c"]);
        let s = RouterSettings {
            fallbacks: entries(&[("a", &["b", "c"])]),
            ..Default::default()
        };
        let p = plan_with(&c, "a", s, Some(&["a", "c"]));
        let mut walk = p.walk();
        walk.group_failed(p.primary, FallbackRoute::Generic);
        let mut skipped = Vec::new();
        let link = walk
            .next(&mut |l, r| skipped.push((c.group(l.to).name.clone(), r)))
            .unwrap();
        assert_eq!(c.group(link.to).name, "c");
        assert_eq!(skipped, [("b".to_string(), SkipReason::NotAllowed)]);
    }

    /// `default_fallbacks` is the `*` entry by another name: a key's beats the gateway's `*`,
    /// as any key setting beats the gateway's; the gateway's entry for the group itself
    /// still wins, and at one level the table's `*` comes first as before.
    #[test]
    fn default_fallbacks_beat_a_star_entry_at_their_level_or_below() {
        let c = catalog(&["a", "b", "c", "d"]);
        let chain = |gateway: RouterSettings, key: RouterSettings| {
            let gateway = c.overrides(&gateway).unwrap();
            let key = c.overrides(&key).unwrap();
            let settings = Levels {
                request: None,
                key: Some(&key),
                team: None,
                gateway: &gateway,
            }
            .resolve(&c.limits);
            let plan = FallbackPlan::new(
                c.group_id("a").unwrap(),
                Arc::new(settings),
                c.all_allowed(),
            );
            names(&c, &plan.generic_chain())
        };
        let key = RouterSettings {
            default_fallbacks: Some(vec!["c".into()]),
            ..Default::default()
        };
        let star = RouterSettings {
            fallbacks: entries(&[("*", &["b"])]),
            ..Default::default()
        };
        assert_eq!(chain(star.clone(), key.clone()), ["a", "c"]);
        let own = RouterSettings {
            fallbacks: entries(&[("a", &["d"]), ("*", &["b"])]),
            ..Default::default()
        };
        // `a`'s own entry wins; `d`, with none, takes the key's default rather than the `*`.
        assert_eq!(chain(own, key), ["a", "d", "c"]);
        let same_level = RouterSettings {
            default_fallbacks: Some(vec!["c".into()]),
            ..star
        };
        // One level: LiteLLM appends `default_fallbacks` to the table as a `*` entry, and
        // the last `*` wins.
        assert_eq!(chain(same_level, RouterSettings::default()), ["a", "c"]);
        let two_stars = RouterSettings {
            fallbacks: entries(&[("*", &["b"]), ("*", &["d"])]),
            ..Default::default()
        };
        assert_eq!(chain(two_stars, RouterSettings::default()), ["a", "d"]);
    }

    #[test]
    fn default_fallbacks_and_disable() {
        let c = catalog(&["a", "b", "c"]);
        let s = RouterSettings {
            fallbacks: entries(&[("b", &["c"])]),
            default_fallbacks: Some(vec!["c".into()]),
            ..Default::default()
        };
        assert_eq!(
            names(&c, &plan_with(&c, "a", s.clone(), None).generic_chain()),
            ["a", "c"]
        );
        let s = RouterSettings {
            disable_fallbacks: Some(true),
            ..s
        };
        assert_eq!(
            names(&c, &plan_with(&c, "a", s, None).generic_chain()),
            ["a"]
        );
    }

    #[test]
    fn a_wildcard_primary_looks_its_fallbacks_up_by_the_requested_name() {
        let yaml = r#"
allow_anonymous: true
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://p/v1"}}
  - {model_name: b, litellm_params: {model: b, api_base: "http://p/v1"}}
  - {model_name: c, litellm_params: {model: c, api_base: "http://p/v1"}}
"#;
        let c = Catalog::new(&GatewayConfig::load("t.yaml", yaml).unwrap()).unwrap();
        let s = RouterSettings {
            fallbacks: entries(&[("openai/gpt-4.1", &["b"]), ("o3", &["c"]), ("*", &["c"])]),
            ..Default::default()
        };
        let plan = |requested: &str| {
            let routed = c.route(requested).expect("the pattern serves it");
            let request = c.overrides(&s).unwrap();
            let settings = Levels {
                request: Some(&request),
                key: None,
                team: None,
                gateway: &c.gateway,
            }
            .resolve(&c.limits);
            FallbackPlan::for_wildcard(
                routed.group,
                routed.wildcard.expect("a wildcard serves it"),
                Arc::new(settings),
                c.all_allowed(),
            )
        };
        assert_eq!(
            names(&c, &plan("openai/gpt-4.1").generic_chain()),
            ["openai/*", "b", "c"],
            "its own entry, then b's own fallbacks (from `*`)"
        );
        assert_eq!(
            names(&c, &plan("openai/o3").generic_chain()),
            ["openai/*", "c"],
            "an entry without the provider prefix applies"
        );
        assert_eq!(
            names(&c, &plan("openai/gpt-4.2").generic_chain()),
            ["openai/*", "c"],
            "no entry of its own: `*`"
        );
    }

    #[test]
    fn no_fallback_route_stops() {
        let c = catalog(&["a", "b"]);
        let p = plan_with(
            &c,
            "a",
            RouterSettings {
                fallbacks: entries(&[("a", &["b"])]),
                ..Default::default()
            },
            None,
        );
        let mut walk = p.walk();
        walk.group_failed(p.primary, FallbackRoute::NoFallback);
        assert_eq!(walk.next(&mut |_, _| {}), None);
    }
}
