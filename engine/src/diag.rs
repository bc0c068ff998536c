//! Validation diagnostics: what is wrong, in which step, where in the YAML, and what would be
//! valid. Rendered like a compiler's errors, all of them at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line/column position in the graph file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn of(span: &marked_yaml::Span) -> Option<Location> {
        span.start().map(|m| Location {
            line: m.line(),
            column: m.column(),
        })
    }
}

/// One problem found in a graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// The step it concerns, when it concerns one.
    pub step: Option<String>,
    pub location: Option<Location>,
    /// What would have been valid.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            step: None,
            location: None,
            help: None,
        }
    }

    pub fn at(mut self, span: &marked_yaml::Span) -> Diagnostic {
        self.location = self.location.or_else(|| Location::of(span));
        self
    }

    pub fn step(mut self, step: &str) -> Diagnostic {
        self.step = Some(step.to_owned());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col: step `x`: message (help)`, one line, for logs and error bodies.
    pub fn one_line(&self, file: &str) -> String {
        let mut s = match self.location {
            Some(l) => format!("{file}:{}:{}: ", l.line, l.column),
            None => format!("{file}: "),
        };
        if let Some(step) = &self.step {
            s.push_str(&format!("step `{step}`: "));
        }
        s.push_str(&self.message);
        if let Some(help) = &self.help {
            s.push_str(&format!(" ({help})"));
        }
        s
    }
}

/// Every problem found in one graph file.
#[derive(Clone, Debug)]
pub struct GraphErrors {
    pub path: PathBuf,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl GraphErrors {
    pub fn new(path: &Path, source: &str, mut diagnostics: Vec<Diagnostic>) -> GraphErrors {
        diagnostics.sort_by_key(|d| d.location);
        diagnostics.dedup();
        GraphErrors {
            path: path.to_owned(),
            source: source.to_owned(),
            diagnostics,
        }
    }
}

impl fmt::Display for GraphErrors {
    /// rustc-style: the message, the file position, the source line with a caret, the help.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.path.display();
        let lines: Vec<&str> = self.source.lines().collect();
        for d in &self.diagnostics {
            match &d.step {
                Some(step) => writeln!(f, "error: step `{step}`: {}", d.message)?,
                None => writeln!(f, "error: {}", d.message)?,
            }
            match d.location {
                Some(loc) => {
                    writeln!(f, "  --> {file}:{}:{}", loc.line, loc.column)?;
                    if let Some(text) = lines.get(loc.line.saturating_sub(1)) {
                        let gutter = loc.line.to_string().len();
                        writeln!(f, "{:gutter$} |", "")?;
                        writeln!(f, "{} | {text}", loc.line)?;
                        writeln!(f, "{:gutter$} | {:>col$}", "", "^", col = loc.column.max(1))?;
                    }
                }
                None => writeln!(f, "  --> {file}")?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        let n = self.diagnostics.len();
        write!(f, "{n} error{} in {file}", if n == 1 { "" } else { "s" })
    }
}

impl GraphErrors {
    /// One `file:line:col: message` line per problem (for editors and CI logs).
    pub fn short(&self) -> String {
        let file = self.path.display().to_string();
        let lines: Vec<String> = self.diagnostics.iter().map(|d| d.one_line(&file)).collect();
        lines.join("\n")
    }
}

impl std::error::Error for GraphErrors {}

/// "`a`, `b` and `c`", for lists of what there is.
pub fn all_of<S: AsRef<str>>(items: &[S]) -> String {
    one_of(items)
        .rsplitn(2, " or ")
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" and ")
}

/// "`a`, `b` or `c`", for "expected one of" messages.
pub fn one_of<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{}`", s.as_ref())).collect();
    match quoted.len() {
        0 => "nothing".into(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_snippet_with_caret() {
        let src = "name: x\ngraph:\n  kind: flwo\n";
        let d = Diagnostic {
            message: "unknown graph kind `flwo`".into(),
            step: None,
            location: Some(Location { line: 3, column: 9 }),
            help: Some("expected `flow` or `router`".into()),
        };
        let out = GraphErrors::new(Path::new("g.yaml"), src, vec![d]).to_string();
        assert!(out.contains("--> g.yaml:3:9"), "{out}");
        assert!(out.contains("3 |   kind: flwo"), "{out}");
        assert!(out.contains("  |         ^"), "{out}");
        assert!(out.contains("= help: expected `flow` or `router`"), "{out}");
        assert!(out.ends_with("1 error in g.yaml"), "{out}");
    }

    #[test]
    fn one_of_lists() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
        assert_eq!(all_of(&["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(all_of(&["a"]), "`a`");
    }
}
