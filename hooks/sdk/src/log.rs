//! JSON log lines on stderr, in the shape the runners parse (`level`, `msg`, extra keys).

use std::io::Write;

use serde_json::{Map, Value};

/// Removes quoted string content from deserialisation errors.
///
/// serde reports a wrong value as `invalid type: string "…", expected …`; when the
/// value is a password that message would leak it. Every error that may quote input
/// passes through here before it is shown.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        match rest[start + 1..].find('"') {
            Some(len) => {
                out.push_str("\"…\"");
                rest = &rest[start + 1 + len + 1..];
            }
            None => {
                out.push_str("\"…");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Longest log line written: runners cut lines at 10,000 characters.
const MAX_LINE: usize = 9_000;

/// A logger bound to one hook.
#[derive(Clone, Debug)]
pub struct Logger {
    hook: String,
}

impl Logger {
    /// A logger whose lines carry `hook`.
    pub fn new(hook: &str) -> Self {
        Logger { hook: hook.into() }
    }

    /// Builds one log line; `fields` become top-level keys.
    pub fn line(&self, level: &str, msg: &str, fields: &[(&str, Value)]) -> String {
        let mut m = Map::new();
        m.insert("level".into(), Value::from(level));
        m.insert("msg".into(), Value::from(msg));
        m.insert("hook".into(), Value::from(self.hook.as_str()));
        m.insert(
            "time".into(),
            Value::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        // The runners cut lines at 10,000 characters and parse a line starting with `{`
        // as JSON: shorten the message, not the line, so the line stays valid JSON.
        let mut keep = msg.len();
        loop {
            let line = serde_json::to_string(&m).expect("a JSON map always serialises");
            if line.len() <= MAX_LINE {
                return line;
            }
            if keep == 0 {
                // The extra fields alone are too long: keep level, msg, hook and time.
                m.retain(|k, _| ["level", "msg", "hook", "time"].contains(&k.as_str()));
                m.insert("truncated".into(), Value::Bool(true));
                return Value::Object(m).to_string();
            }
            keep = keep.saturating_sub(line.len() - MAX_LINE + 8);
            while !msg.is_char_boundary(keep) {
                keep -= 1;
            }
            m.insert("msg".into(), Value::from(format!("{}…", &msg[..keep])));
        }
    }

    fn emit(&self, level: &str, msg: &str, fields: &[(&str, Value)]) {
        let line = self.line(level, msg, fields);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Logs at info level.
    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit("info", msg, fields)
    }

    /// Logs at warn level.
    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit("warn", msg, fields)
    }

    /// Logs at error level.
    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit("error", msg, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_quoted_values() {
        assert_eq!(
            redact(r#"invalid type: string "hunter2", expected u32 at line 1"#),
            r#"invalid type: string "…", expected u32 at line 1"#
        );
        assert_eq!(redact(r#"open "x"#), r#"open "…"#);
        assert_eq!(redact("no quotes"), "no quotes");
    }

    #[test]
    fn lines_are_json_with_level_and_msg() {
        let l = Logger::new("h").line("info", "hello", &[("masters", Value::from(3))]);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "hello");
        assert_eq!(v["masters"], 3);
        let long = Logger::new("h").line("info", &"é".repeat(20_000), &[]);
        assert!(long.len() <= 9_000);
        // Cut or not, a line is JSON the runner can parse, escapes included.
        for msg in ["é".repeat(20_000), "\"\n".repeat(9_000), "x".repeat(8_990)] {
            let line =
                Logger::new("h").line("error", &msg, &[("nodes", Value::from(vec!["n"; 3]))]);
            let v: Value = serde_json::from_str(&line).expect("valid JSON");
            assert!(line.len() <= 9_000, "{}", line.len());
            assert_eq!(v["level"], "error");
            assert!(msg.starts_with(v["msg"].as_str().unwrap().trim_end_matches('…')));
        }
        let fields =
            Logger::new("h").line("warn", "m", &[("nodes", Value::from("n".repeat(20_000)))]);
        let v: Value = serde_json::from_str(&fields).expect("valid JSON");
        assert_eq!(
            (v["msg"].as_str(), v["truncated"].as_bool()),
            (Some("…"), Some(true))
        );
    }
}
