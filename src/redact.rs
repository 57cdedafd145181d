//! Keeping secrets out of every message a client can read.
//!
//! Owns: [`Redactor`], built once from the config's secrets (every deployment's `api_key`),
//! which rewrites text that came from an upstream (an error message, an error event) before
//! it can reach a client: each secret, and any run of 8 or more of its leading or trailing
//! characters (a provider that echoes half a key), becomes `[redacted]`; so does whatever
//! follows `Bearer ` (an upstream echoing the headers it got). The text is also bounded in
//! length.
//!
//! A secret shorter than [`MIN_ECHO`] is a placeholder a local server ignores (vLLM's docs
//! give `EMPTY`, Ollama's `ollama`, many configs `x`): it is still kept out, but only where it
//! stands as a word. Replaced everywhere, a key `x` turned `max_tokens` into
//! `ma[redacted]_tokens` in every message a client read. Does not own which texts pass through it (`attempt` sends every upstream-sourced
//! failure message through it).

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Longest upstream-sourced message passed on to a client, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Shortest run of a secret's characters that counts as an echo of it.
const MIN_ECHO: usize = 8;

#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// How many secrets, never which: a `{:?}` of the catalog must not print them.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these secrets (duplicates and empty strings are ignored).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret and every `Bearer <token>` replaced, cut to
    /// [`MAX_MESSAGE_BYTES`].
    pub fn redact(&self, text: &str) -> String {
        // Bound the work first; whatever a cut here leaves of a secret lies past the final,
        // shorter cut below.
        let mut out = cut(text, 8 * MAX_MESSAGE_BYTES).to_string();
        for secret in &self.secrets {
            if secret.len() >= MIN_ECHO {
                out = out.replace(secret.as_str(), REDACTED);
                out = redact_partial(&out, secret);
            } else {
                out = redact_word(&out, secret);
            }
        }
        out = redact_bearer(&out);
        truncate(out)
    }
}

/// Replaces runs of at least [`MIN_ECHO`] characters of `secret` that start like it (its
/// head, then as much more of it as matches) or end like it. Linear in the text: the head and
/// tail are found with `match_indices`, then extended.
fn redact_partial(text: &str, secret: &str) -> String {
    if !secret.is_ascii() {
        return text.to_string();
    }
    let (t, s) = (text.as_bytes(), secret.as_bytes());
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (i, _) in text.match_indices(&secret[..MIN_ECHO]) {
        let run = t[i..].iter().zip(s).take_while(|(a, b)| a == b).count();
        ranges.push((i, i + run));
    }
    for (i, _) in text.match_indices(&secret[s.len() - MIN_ECHO..]) {
        let end = i + MIN_ECHO;
        let run = t[..end]
            .iter()
            .rev()
            .zip(s.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        ranges.push((end - run, end));
    }
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in ranges {
        if end <= copied {
            continue;
        }
        // ASCII bytes matched, so both ends are char boundaries.
        out.push_str(&text[copied..start.max(copied)]);
        if start >= copied {
            out.push_str(REDACTED);
        }
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with each occurrence of `secret` that stands as a word replaced: where the secret
/// begins (ends) with a word character, the text must not have one just before (after) it.
/// An escape just before it (`%22`, `\n`) ends a word too: its last character is no part of
/// one. Occurrences that overlap a rejected one are still found.
fn redact_word(text: &str, secret: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let needs_left = secret.chars().next().is_some_and(is_word);
    let needs_right = secret.chars().next_back().is_some_and(is_word);
    let escaped_before = |at: usize| {
        let b = &text.as_bytes()[..at];
        let percent = b.len() >= 3
            && b[b.len() - 3] == b'%'
            && b[b.len() - 2..].iter().all(u8::is_ascii_hexdigit);
        let backslash = b.len() >= 2 && b[b.len() - 2] == b'\\';
        percent || backslash
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(secret) {
        let at = from + found;
        let end = at + secret.len();
        let left_ok = !needs_left
            || !text[..at].chars().next_back().is_some_and(is_word)
            || escaped_before(at);
        let right_ok = !needs_right || !text[end..].chars().next().is_some_and(is_word);
        if left_ok && right_ok {
            out.push_str(&text[copied..at]);
            out.push_str(REDACTED);
            copied = end;
            from = end;
        } else {
            // The next occurrence may begin inside this one.
            from = at + text[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `Bearer <anything up to whitespace or a quote>` → `Bearer [redacted]`.
fn redact_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(at) = lower.find("bearer ") else {
            out.push_str(rest);
            return out;
        };
        let start = at + "bearer ".len();
        out.push_str(&rest[..start]);
        let token_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
            .unwrap_or(rest.len() - start);
        if token_len > 0 && !rest[start..start + token_len].starts_with(REDACTED) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&rest[start..start + token_len]);
        }
        rest = &rest[start + token_len..];
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    &text[..at]
}

fn truncate(text: String) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    format!("{}…", cut(&text, MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_partial_echoes_and_bearer_tokens() {
        let r = Redactor::new(["sk-upstream-SECRET-123", "short"]);
        assert_eq!(
            r.redact("Incorrect API key provided: sk-upstream-SECRET-123."),
            "Incorrect API key provided: [redacted]."
        );
        assert_eq!(
            r.redact("key sk-upstream-SE… rejected"),
            "key [redacted]… rejected"
        );
        assert_eq!(r.redact("ends ...eam-SECRET-123"), "ends ...[redacted]");
        assert_eq!(r.redact("a short word"), "a [redacted] word");
        assert_eq!(r.redact("shortly, short."), "shortly, [redacted].");
        assert_eq!(
            r.redact("authorization: Bearer abc.def; host"),
            "authorization: Bearer [redacted]; host"
        );
        assert_eq!(r.redact("nothing to hide"), "nothing to hide");
        assert_eq!(
            r.redact("Authorization: Bearer sk-upstream-SECRET-123"),
            "Authorization: Bearer [redacted]"
        );
    }

    #[test]
    fn a_placeholder_key_is_replaced_only_as_a_word() {
        let r = Redactor::new(["x", "EMPTY", "sk-1234"]);
        assert_eq!(
            r.redact("max_tokens: x is not EMPTY, EMPTYx or sk-12345 but sk-1234."),
            "max_tokens: [redacted] is not [redacted], EMPTYx or sk-12345 but [redacted]."
        );
        assert_eq!(r.redact("x"), "[redacted]");
        assert_eq!(r.redact("é x é"), "é [redacted] é");
        assert_eq!(r.redact("xx x"), "xx [redacted]");
        // Escapes end a word; an occurrence overlapping a rejected one is found.
        let r = Redactor::new(["abc123", "ab-ab"]);
        assert_eq!(
            r.redact("q=%22abc123%22 and \\nabc123"),
            "q=%22[redacted]%22 and \\n[redacted]"
        );
        assert_eq!(r.redact("xab-ab-ab"), "xab-[redacted]");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let r = Redactor::new([]);
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = r.redact(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn non_ascii_text_around_secrets_survives() {
        let r = Redactor::new(["sk-12345678"]);
        assert_eq!(r.redact("ключ sk-12345678 ✓"), "ключ [redacted] ✓");
    }
}
