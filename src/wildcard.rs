//! Wildcard model groups (`model_name: "openai/*"`, `"*"`) and wildcard allow-list entries.
//!
//! Owns: LiteLLM's matching rules, as pure functions over strings: whether a pattern group
//! serves a requested model name and what its `*`s captured; which of several matching
//! patterns wins; the model a deployment of a pattern group is then asked for; and whether a
//! `models` allow-list entry of a key or team (`"openai/*"`) admits a name. Does not own
//! where patterns live (`catalog`), nor the fallbacks of a wildcard-served request (`plan`,
//! `policy`).
//!
//! Checked against LiteLLM 1.83.0:
//! - `litellm/router_utils/pattern_match_deployments.py`, `PatternMatchRouter`: a pattern is
//!   `re.escape(model_name)` with every `\*` turned into a group `(.*)`, tried with
//!   `re.match` (anchored at the start only); patterns are tried most specific first
//!   (`PatternUtils.calculate_pattern_specificity`: the regex's length, then its count of
//!   regex metacharacters, descending; ties keep `model_list` order); and
//!   `set_deployment_model_name` puts the captures into the deployment's
//!   `litellm_params.model` (`openai/*` → `openai/gpt-4.1`).
//! - `litellm/router.py`, `Router._common_checks_available_deployment`: an exact
//!   `model_name` is looked up before any pattern.
//! - `litellm/proxy/auth/auth_checks.py`, `is_model_allowed_by_pattern` and
//!   `_check_model_access_helper`: an allow-list entry with a `*` is the regex
//!   `^entry$` with `*` read as `.*`; an entry without one must equal the name.

/// A `model_name` with at least one `*`: the literal text around its wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `n` wildcards split the name into `n + 1` literals (some possibly empty).
    literals: Vec<String>,
}

/// Python's `re.escape` (3.7 and later) escapes exactly these characters.
const PYTHON_ESCAPED: &str = "()[]{}?*+-|^$\\.&~# \t\n\r\x0b\x0c";
/// What LiteLLM counts as a pattern's "complexity".
const COMPLEXITY_CHARS: &str = "*+?\\^$|()";

impl Pattern {
    /// The pattern of a group name, or `None` when it has no `*` (an exact group).
    pub fn parse(name: &str) -> Option<Pattern> {
        if !name.contains('*') {
            return None;
        }
        Some(Pattern {
            literals: name.split('*').map(str::to_string).collect(),
        })
    }

    /// LiteLLM's sort key (higher is tried first): the length of the regex LiteLLM builds
    /// from the name, then how many regex metacharacters it holds.
    pub fn specificity(name: &str) -> (usize, usize) {
        let mut regex = String::new();
        for c in name.chars() {
            if c == '*' {
                regex.push_str("(.*)");
            } else {
                if PYTHON_ESCAPED.contains(c) {
                    regex.push('\\');
                }
                regex.push(c);
            }
        }
        let length = regex.chars().count();
        let complexity = regex
            .chars()
            .filter(|c| COMPLEXITY_CHARS.contains(*c))
            .count();
        (length, complexity)
    }

    /// What the wildcards captured when `name` matches, as Python's `re.match` of
    /// LiteLLM's regex would: anchored at the start but not at the end, every group
    /// greedy. Greedy groups left to right place each literal as late as the literals
    /// after it allow, which is placing them from the right. A name with a line break
    /// never matches (LiteLLM's `.` stops at one and would match a prefix only).
    pub fn captures<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        if name.contains('\n') {
            return None;
        }
        let (first, rest) = self.literals.split_first().expect("at least one literal");
        let start = name.strip_prefix(first.as_str()).map(|_| first.len())?;
        let mut limit = name.len();
        let mut at = vec![0; rest.len()];
        for (j, literal) in rest.iter().enumerate().rev() {
            let pos = name[..limit].rfind(literal.as_str())?;
            if pos < start {
                return None;
            }
            at[j] = pos;
            limit = pos;
        }
        let mut captures = Vec::with_capacity(rest.len());
        let mut from = start;
        for (j, literal) in rest.iter().enumerate() {
            captures.push(&name[from..at[j]]);
            from = at[j] + literal.len();
        }
        Some(captures)
    }
}

/// The `litellm_params.model` a deployment of a pattern group is called with for a request
/// whose name gave `captures` (LiteLLM's `set_deployment_model_name`): a model without `*`
/// is used as it is; more captures than `*`s, and the requested name is used whole;
/// otherwise each capture replaces the first `*` left, in turn (as Python's
/// `str.replace(.., 1)` does, so a capture holding a `*` is itself replaced next).
pub fn deployment_model(template: &str, captures: &[&str], requested: &str) -> String {
    let stars = template.matches('*').count();
    if stars == 0 {
        return template.to_string();
    }
    if captures.len() > stars {
        return requested.to_string();
    }
    let mut model = template.to_string();
    for c in captures {
        model = model.replacen('*', c, 1);
    }
    model
}

/// Whether the allow-list `list` admits every name there is, now and after a reload: it is
/// empty (no restriction) or holds `*`.
pub fn allow_list_admits_every_name(list: &[String]) -> bool {
    list.is_empty() || list.iter().any(|entry| entry == "*")
}

/// Whether an allow-list (a key's or team's `models`) admits the model name `name`:
/// an empty list or a `*` entry admits everything; an entry without `*` must equal the
/// name; an entry with `*` matches the whole name, `*` standing for any run of characters
/// and `.` for any one (LiteLLM reads the entry as a regex; its other metacharacters are
/// taken literally here, a documented difference).
pub fn allow_list_admits(list: &[String], name: &str) -> bool {
    list.is_empty()
        || list.iter().any(|entry| {
            entry == "*"
                || entry == name
                || (entry.contains('*') && allow_entry_matches(entry.as_bytes(), name))
        })
}

/// `*` any run, `.` any one character, anything else itself; the whole name. A name with
/// a line break never matches (LiteLLM's `.` stops at one). The classic two-pointer glob
/// match: linear in practice, at worst the product of the lengths (the entry comes from the
/// config, the name is bounded by `max_model_name_bytes`).
fn allow_entry_matches(entry: &[u8], name: &str) -> bool {
    if name.contains('\n') {
        return false;
    }
    let name: Vec<char> = name.chars().collect();
    let entry: Vec<char> = String::from_utf8_lossy(entry).chars().collect();
    let (mut e, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if e < entry.len() && entry[e] != '*' && (entry[e] == name[n] || entry[e] == '.') {
            e += 1;
            n += 1;
        } else if e < entry.len() && entry[e] == '*' {
            star = Some((e, n));
            e += 1;
        } else if let Some((se, sn)) = star {
            e = se + 1;
            n = sn + 1;
            star = Some((se, sn + 1));
        } else {
            return false;
        }
    }
    entry[e..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps<'a>(pattern: &str, name: &'a str) -> Option<Vec<&'a str>> {
        Pattern::parse(pattern).unwrap().captures(name)
    }

    #[test]
    fn captures_follow_python_re_match() {
        assert_eq!(caps("openai/*", "openai/gpt-4.1"), Some(vec!["gpt-4.1"]));
        assert_eq!(caps("openai/*", "anthropic/claude"), None);
        assert_eq!(caps("*", "anything/at all"), Some(vec!["anything/at all"]));
        assert_eq!(caps("*", ""), Some(vec![""]));
        // Anchored at the start only: a trailing literal may be followed by anything.
        assert_eq!(caps("*-mini", "gpt-4o-mini-2024"), Some(vec!["gpt-4o"]));
        // Greedy: the last occurrence that leaves the rest matchable.
        assert_eq!(caps("*-*", "a-b-c"), Some(vec!["a-b", "c"]));
        assert_eq!(caps("**", "abc"), Some(vec!["abc", ""]));
        assert_eq!(
            caps(
                "llmengine/fo::*::static::*",
                "llmengine/foo::bar::static::baz"
            ),
            None,
            "`fo::` is not a prefix of `foo::`"
        );
        assert_eq!(
            caps(
                "llmengine/fo*::static::*",
                "llmengine/foo::bar::static::baz"
            ),
            Some(vec!["o::bar", "baz"])
        );
        assert_eq!(
            caps("*meta.llama3*", "x-meta.llama3-70b"),
            Some(vec!["x-", "-70b"])
        );
        assert_eq!(caps("a*b", "ab"), Some(vec![""]));
        assert_eq!(caps("ab*b", "ab"), None, "literals may not overlap");
        assert_eq!(caps("openai/*", "openai/a\nb"), None);
    }

    #[test]
    fn specificity_is_litellms() {
        // re.escape("openai/*") = "openai/\*" → "openai/(.*)": 11 characters, 3 metas.
        assert_eq!(Pattern::specificity("openai/*"), (11, 3));
        assert_eq!(Pattern::specificity("*"), (4, 3));
        // "-" and "." are escaped: each adds a character and a backslash.
        assert_eq!(Pattern::specificity("gpt-*"), (9, 4));
        assert_eq!(Pattern::specificity("a.b*"), (8, 4));
    }

    #[test]
    fn deployment_model_substitutes_like_litellm() {
        assert_eq!(
            deployment_model("openai/*", &["gpt-4.1"], "openai/gpt-4.1"),
            "openai/gpt-4.1"
        );
        assert_eq!(
            deployment_model("openai/gpt-4o", &["x"], "openai/x"),
            "openai/gpt-4o"
        );
        assert_eq!(
            deployment_model("bedrock/meta.llama3*", &["x-", "-70b"], "x-meta.llama3-70b"),
            "x-meta.llama3-70b",
            "more captures than wildcards: the requested name"
        );
        assert_eq!(deployment_model("p/*/*", &["a"], "r"), "p/a/*");
        assert_eq!(deployment_model("p/*-*", &["a*b", "c"], "r"), "p/acb-*");
    }

    #[test]
    fn allow_lists_read_wildcards() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allow_list_admits(&[], "anything"));
        assert!(allow_list_admits(&list(&["*"]), "anything"));
        assert!(allow_list_admits(&list(&["openai/*"]), "openai/gpt-4.1"));
        assert!(!allow_list_admits(&list(&["openai/*"]), "openaix/gpt-4.1"));
        assert!(allow_list_admits(
            &list(&["openai/gpt-4.1"]),
            "openai/gpt-4.1"
        ));
        assert!(!allow_list_admits(
            &list(&["openai/gpt-4.1"]),
            "openai/gpt-4.2"
        ));
        assert!(
            !allow_list_admits(&list(&["gpt"]), "gpt-4"),
            "no * : exact only"
        );
        assert!(allow_list_admits(
            &list(&["bedrock/us.*"]),
            "bedrock/us.nova"
        ));
        assert!(
            allow_list_admits(&list(&["gpt-4.*"]), "gpt-4o"),
            "`.` is any one"
        );
        assert!(allow_list_admits(&list(&["*-mini"]), "gpt-4o-mini"));
        assert!(
            !allow_list_admits(&list(&["*-mini"]), "gpt-4o-mini-2024"),
            "whole name"
        );
        assert!(!allow_list_admits(&list(&["a*"]), "a\nb"));
    }
}
