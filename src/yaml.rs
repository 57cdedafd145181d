//! Loading YAML files into typed values with errors a person can act on.
//!
//! Owns: turning `serde-saphyr` and `serde_path_to_error` failures into one [`YamlError`]
//! that names the file, line, column and field path, with a "did you mean" hint for a
//! misspelt field; and [`locate`], which finds where a path sits in the source so that
//! checks made *after* deserialising (an unknown group in a fallback list, say) can point
//! at the same place. Does not own what the files mean: that is `config` (and, in the
//! harness, the scenario model).

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::localizer::ExternalMessageSource;
use serde_saphyr::{Options, Spanned};

/// Largest YAML file we agree to parse. Real gateway configs and scenario files are a few
/// kilobytes; anything near this is a mistake (or an attack) and is refused up front.
pub const MAX_YAML_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting of mappings and sequences we agree to parse. Deserialising recurses once
/// per level, with frames so large in a debug build that serde-saphyr's own budget (64)
/// overflowed a 2 MiB stack (a test thread's, a tokio worker's, where `/admin/reload`
/// parses) under about 50 levels. Real configs and scenarios nest 8 deep at most, a
/// request body in a scenario a few levels more. At 32 a debug build's parse needs under
/// 1.5 MiB (`tests/fuzz_yaml_depth.rs` parses at the limit on a 2 MiB thread); a release
/// build's frames are a fraction of that.
pub const MAX_YAML_DEPTH: usize = 32;

/// The parser's options for every YAML file we read: its defaults, with our depth limit,
/// and counts of nodes and events that every file within [`MAX_YAML_BYTES`] fits (a node
/// takes at least 2 bytes, `a,`): the size of a file is limited by its bytes alone. With
/// the parser's defaults (250,000 nodes) a 3 MB config of 32,000 deployments was refused,
/// and as "unclosed `{`".
fn options() -> Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            max_nodes: MAX_YAML_BYTES / 2,
            max_events: MAX_YAML_BYTES,
        },
    }
}

/// A YAML file that could not be loaded: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// The file name as the user gave it (or a label such as `<request>`).
    pub file: String,
    /// 1-based line; 0 when the place is unknown.
    pub line: u64,
    /// 1-based column; 0 when the place is unknown.
    pub column: u64,
    /// Dotted field path, e.g. `router_settings.fallbacks[0]`; empty for the document root.
    pub path: String,
    /// What is wrong, without location decoration.
    pub message: String,
    /// The nearest valid name when the problem is an unknown field or variant.
    pub hint: Option<String>,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (did you mean `{hint}`?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for YamlError {}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders a path the way [`YamlError::path`] shows it.
pub fn render_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// Parses `text` (the contents of `file`) into `T`.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, YamlError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(YamlError {
            file: file.to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!(
                "file is {} bytes, over the limit MAX_YAML_BYTES = {MAX_YAML_BYTES}",
                text.len()
            ),
            hint: None,
        });
    }
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut message = clean_message(&e.without_snippet().to_string());
        let mut hint = suggest(&message);
        let (mut line, mut column) = (line, column);
        // The typed parse stops at its first mistake, often before it has read the whole
        // document: read it again as bare nodes to tell a document that is not YAML, or is
        // too deep, from one with a mistake of meaning.
        let unparsable = parse_node(text).err();
        let depth = Some(&e)
            .filter(|e| too_deep(e))
            .or(unparsable.as_ref().filter(|n| too_deep(n)));
        let breach = over_budget(&e).or_else(|| unparsable.as_ref().and_then(over_budget));
        if let Some(breach) = breach.filter(|_| depth.is_none()) {
            // Not a syntax error either: aliases past the parser's limits (a billion
            // laughs), or a count past what any file within MAX_YAML_BYTES holds.
            message = format!(
                "the document is over the YAML parser's limits ({breach:?}): aliases are \
                 bounded so that a small file cannot expand into a huge one, and counts so \
                 that no file within MAX_YAML_BYTES = {MAX_YAML_BYTES} meets them"
            );
            hint = None;
        } else if let Some(depth) = depth {
            // Not a syntax error, though the parser stops there: an unclosed-bracket hunt
            // would blame whichever `{` was open at that point.
            message = format!(
                "the document is nested too deeply: more than MAX_YAML_DEPTH = {MAX_YAML_DEPTH} levels of mappings and sequences"
            );
            if let Some(l) = depth.location().filter(|l| l.line() > 0) {
                (line, column) = (l.line(), l.column());
            }
            hint = None;
        } else if let Some(better) = expected_instead(&message, text, line, column) {
            message = better;
        } else if let Some((l, c, bracket)) = unparsable
            .is_some()
            .then(|| unclosed_flow(text, line, column))
            .flatten()
        {
            // A syntax error (the file is not YAML at all) inside a `[` or `{` that is still
            // open: the parser notices an unclosed bracket only where the next token cannot
            // continue it, often lines later, so point at the bracket itself.
            message = format!(
                "unclosed `{bracket}`: it is never closed (the parser gave up at line {line}, column {column}: {message})"
            );
            (line, column) = (l, c);
        }
        let mut path = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        // A duplicate key: name it in the path, and drop the parser's advice, which is
        // about its own options, not about the file.
        if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
            let key = rest.split(',').next().unwrap_or(rest).trim().to_string();
            path = match path.strip_suffix('?') {
                Some(parent) => format!("{parent}{key}"),
                None if path.is_empty() => key.clone(),
                None => path,
            };
            message = format!("`{key}` appears twice in the same mapping");
        }
        YamlError {
            file: file.to_string(),
            line,
            column,
            path,
            message,
            hint,
        }
    })
}

/// The parser's budget `e` breached, unless it is the depth (see [`too_deep`]).
fn over_budget(e: &serde_saphyr::Error) -> Option<BudgetBreach> {
    match e.without_snippet() {
        serde_saphyr::Error::Budget { breach, .. }
            if !matches!(breach, BudgetBreach::Depth { .. }) =>
        {
            Some(breach.clone())
        }
        _ => None,
    }
}

/// Whether `e` is the depth limit, [`MAX_YAML_DEPTH`]: the budget's, or the parser's own
/// nesting limit, which its look-ahead reaches first in a long run of `[` or `{`.
fn too_deep(e: &serde_saphyr::Error) -> bool {
    match e.without_snippet() {
        serde_saphyr::Error::Budget { breach, .. } => matches!(breach, BudgetBreach::Depth { .. }),
        serde_saphyr::Error::ExternalMessage { source, .. } => matches!(
            &**source,
            ExternalMessageSource::Parser(scan)
                if matches!(scan.kind(), ErrorKind::RecursionLimitExceeded)
        ),
        _ => false,
    }
}

/// The document as [`Node`]s, under the same limits as the typed parse.
fn parse_node(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// An error found after deserialising, pinned to `path` in `text` when the path exists there.
pub fn error_at(file: &str, text: &str, path: &[PathSeg], message: impl Into<String>) -> YamlError {
    let (line, column) = locate(text, path).unwrap_or((0, 0));
    YamlError {
        file: file.to_string(),
        line,
        column,
        path: render_path(path),
        message: message.into(),
        hint: None,
    }
}

/// The serde-saphyr message ends with " at line L, column C"; the location is already
/// carried separately, so strip it to avoid saying it twice.
fn clean_message(raw: &str) -> String {
    let first_line = raw.lines().next().unwrap_or(raw);
    let trimmed = first_line.trim_start_matches("error: ");
    let without_prefix = match trimmed.find(": ") {
        Some(i) if trimmed[..i].starts_with("line ") => &trimmed[i + 2..],
        _ => trimmed,
    };
    match without_prefix.rfind(" at line ") {
        Some(i) => without_prefix[..i].to_string(),
        None => without_prefix.to_string(),
    }
}

/// For "invalid u32" and its kind (a value of the wrong type), what was expected instead and
/// what the file has at that place.
fn expected_instead(message: &str, text: &str, line: u64, column: u64) -> Option<String> {
    let ty = message.strip_prefix("invalid ")?;
    let expected = match ty {
        "u8" => format!("a whole number from 0 to {}", u8::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" | "usize" => format!("a whole number from 0 to {}", u64::MAX),
        "i32" => format!("a whole number from {} to {}", i32::MIN, i32::MAX),
        "i64" | "isize" => format!("a whole number from {} to {}", i64::MIN, i64::MAX),
        "floating point" | "f32" | "f64" => "a number".to_string(),
        "boolean" | "bool" => "true or false".to_string(),
        _ => return None,
    };
    Some(match token_at(text, line, column) {
        Some(found) => format!("expected {expected}, found `{found}`"),
        None => format!("expected {expected}"),
    })
}

/// The scalar that starts at (line, column), 1-based, as written.
fn token_at(text: &str, line: u64, column: u64) -> Option<String> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let rest: String = l
        .chars()
        .skip(usize::try_from(column).ok()?.saturating_sub(1))
        .collect();
    let token = match rest.chars().next()? {
        q @ ('"' | '\'') => {
            let end = rest[1..].find(q).map_or(rest.len(), |i| i + 2);
            rest[..end].to_string()
        }
        _ => rest
            .split([',', ']', '}', '#'])
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    (!token.is_empty()).then_some(token)
}

/// The innermost `[` or `{` still open at (line, column), as (line, column, bracket):
/// flow collections only, outside quotes and comments.
fn unclosed_flow(text: &str, line: u64, column: u64) -> Option<(u64, u64, char)> {
    let mut open: Vec<(u64, u64, char)> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if n > line {
            break;
        }
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        let mut value_start = true;
        for (j, c) in l.chars().enumerate() {
            let col = j as u64 + 1;
            if n == line && col >= column {
                break;
            }
            match quote {
                Some(q) => {
                    if c == q && previous != '\\' {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if previous.is_whitespace() || j == 0 => break,
                    '"' | '\'' if value_start || !open.is_empty() => quote = Some(c),
                    '[' | '{' if value_start || !open.is_empty() => open.push((n, col, c)),
                    ']' | '}' => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            // A flow collection or a quoted scalar opens where a value may begin.
            if !c.is_whitespace() {
                value_start = matches!(c, ':' | '-' | ',' | '[' | '{');
            }
            previous = c;
        }
    }
    open.pop()
}

/// For "unknown field `x`, expected one of a, b" (or `unknown variant`), the closest
/// expected name, if any is close enough to be a plausible typo.
fn suggest(message: &str) -> Option<String> {
    let unknown = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()))?;
    let rest = &message[unknown..];
    let end = rest.find('`')?;
    let wrong = &rest[..end];
    let expected = rest[end..]
        .split_once("expected ")
        .map(|(_, e)| e)?
        .trim_start_matches("one of ");
    nearest(
        wrong,
        expected.split(", ").map(|c| {
            c.trim()
                .trim_matches('`')
                .trim_start_matches("or ")
                .trim_matches('`')
        }),
    )
}

/// The candidate closest to `wrong`, if one is close enough to be a plausible typo: the
/// "did you mean" of every error that names something unknown.
pub fn nearest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| (strsim::damerau_levenshtein(wrong, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Where `path` is in `text`: (line, column) of the value (or the closest ancestor present).
pub fn locate(text: &str, path: &[PathSeg]) -> Option<(u64, u64)> {
    let root = parse_node(text).ok()?;
    let mut here = &root;
    let mut best = pos(here);
    for seg in path {
        let next = match (&here.value, seg) {
            (Node::Map(entries), PathSeg::Key(k)) => entries
                .iter()
                .find(|(key, _)| key.value == *k)
                .map(|(key, value)| {
                    // Point at the key: that is the token a person looks for.
                    best = pos(key);
                    value
                }),
            (Node::Seq(items), PathSeg::Index(i)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => {
                here = n;
                if !matches!(seg, PathSeg::Key(_))
                    || !matches!(n.value, Node::Map(_) | Node::Seq(_))
                {
                    best = pos(here).or(best);
                }
            }
            None => break,
        }
    }
    best
}

fn pos<T>(s: &Spanned<T>) -> Option<(u64, u64)> {
    let l = s.referenced;
    (l.line() > 0).then(|| (l.line(), l.column()))
}

/// A YAML node with the position of every key and value, for [`locate`].
enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> de::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value()?;
            let key = Spanned {
                value: key.value.0,
                referenced: key.referenced,
                defined: key.defined,
            };
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key of any scalar type, as text (YAML allows `1: x` or `true: y`).
struct KeyText(String);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count past the parser's budget is said as such, never as a bracket left open;
    /// and the budget lets through every file within MAX_YAML_BYTES.
    #[test]
    fn a_file_over_the_parsers_budget_is_told_so() {
        // One anchor, 200 aliases of it: a small file that expands, past the ratio the
        // parser allows.
        let mut text = String::from("a: &x {k: [1, 2, 3]}\nb: [");
        for _ in 0..200 {
            text.push_str("*x, ");
        }
        text.push_str("*x]\n");
        let e = from_str::<serde_json::Value>("t.yaml", &text).unwrap_err();
        assert!(e.message.contains("over the YAML parser's limits"), "{e}");
        assert!(!e.message.contains("unclosed"), "{e}");
        // A flat sequence of one-character items, more than the parser's default of
        // 250,000 nodes, well within the byte limit: no budget in the way.
        let items = 300_000;
        let mut text = String::with_capacity(MAX_YAML_BYTES);
        text.push('[');
        for _ in 0..items {
            text.push_str("1,");
        }
        text.push_str("1]");
        assert!(text.len() <= MAX_YAML_BYTES);
        let v = from_str::<Vec<u8>>("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.len(), items + 1);
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        timeout: Option<u64>,
        #[allow(dead_code)]
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        inner: Vec<Inner>,
    }

    #[test]
    fn typo_names_file_line_column_path_and_suggests() {
        let e = from_str::<Doc>("cfg.yaml", "inner:\n  - name: x\n    timeot: 5\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 5));
        assert_eq!(e.path, "inner[0].timeot");
        assert_eq!(e.hint.as_deref(), Some("timeout"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("cfg.yaml:3:5: field `inner[0].timeot`: unknown field"),
            "{shown}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = from_str::<Doc>("c.yaml", "inner:\n  - name: x\n    timeout: abc\n").unwrap_err();
        assert_eq!(e.path, "inner[0].timeout");
        assert_eq!(e.line, 3);
        assert!(e.hint.is_none());
    }

    #[test]
    fn broken_syntax_is_an_error_not_a_panic() {
        let e = from_str::<Doc>("c.yaml", "inner: [\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn a_wrong_type_says_what_was_expected_and_what_was_found() {
        #[derive(Debug, Deserialize)]
        struct Counts {
            #[allow(dead_code)]
            n: u32,
        }
        let e = from_str::<Counts>("c.yaml", "n: many\n").unwrap_err();
        assert_eq!(
            e.message,
            "expected a whole number from 0 to 4294967295, found `many`"
        );
        let e = from_str::<Counts>("c.yaml", "n: -3 # negative\n").unwrap_err();
        assert!(e.message.ends_with("found `-3`"), "{}", e.message);
    }

    #[test]
    fn an_unclosed_bracket_is_reported_where_it_opens() {
        #[derive(Debug, Deserialize)]
        struct Lists {
            #[allow(dead_code)]
            items: Vec<String>,
            #[allow(dead_code)]
            next: Option<u32>,
        }
        let text = "items: [x, y\nnext: 5\n";
        let e = from_str::<Lists>("c.yaml", text).unwrap_err();
        assert_eq!((e.line, e.column), (1, 8), "{e}");
        assert!(e.message.starts_with("unclosed `[`"), "{e}");
        // Brackets inside quotes, comments and plain text do not count.
        assert_eq!(unclosed_flow("a: \"[\" # [\nb: x [y\nc: :\n", 3, 4), None);
    }

    #[test]
    fn oversized_file_is_refused() {
        let big = "#".repeat(MAX_YAML_BYTES + 1);
        let e = from_str::<Doc>("c.yaml", &big).unwrap_err();
        assert!(e.message.contains("MAX_YAML_BYTES"));
    }

    #[test]
    fn locate_finds_nested_values() {
        let text = "a:\n  b:\n    - x\n    - y\n  c: 1\n";
        let p = |s: &[PathSeg]| locate(text, s);
        assert_eq!(
            p(&[PathSeg::Key("a".into()), PathSeg::Key("c".into())]),
            Some((5, 6))
        );
        assert_eq!(
            p(&[
                PathSeg::Key("a".into()),
                PathSeg::Key("b".into()),
                PathSeg::Index(1)
            ]),
            Some((4, 7))
        );
        // A missing leaf falls back to the closest ancestor.
        assert_eq!(
            p(&[PathSeg::Key("a".into()), PathSeg::Key("zz".into())]),
            Some((1, 1))
        );
    }

    #[test]
    fn suggestion_needs_to_be_close() {
        assert_eq!(
            suggest("unknown field `zzzzzzzz`, expected one of timeout, name"),
            None
        );
        assert_eq!(
            suggest("unknown variant `contnue`, expected one of `continue`, `error`").as_deref(),
            Some("continue")
        );
    }
}
