//! The small condition language of routing and follow-up rules:
//!
//! ```text
//! tier in [gold, platinum] && recent_contacts >= 1 && sentiment <= -0.3
//! reason == defective || !known
//! ```
//!
//! Terms are `name`, `!name`, `name OP value` (OP: == != >= <= > <) and
//! `name in [a, b]`; `&&` binds tighter than `||`. Conditions are parsed when
//! the rule file loads, so a typo is reported with its file and line, not
//! discovered on a live call.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Num(n) => *n != 0.0,
            Value::Str(s) => !s.is_empty() && s != "false",
        }
    }

    fn as_num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => s.parse().ok(),
            Value::Bool(b) => Some(*b as u8 as f64),
        }
    }

    fn as_text(&self) -> String {
        match self {
            Value::Num(n) => format!("{n}"),
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Num(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

/// The facts a condition is evaluated over.
pub type Facts = BTreeMap<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Truthy(String),
    Not(String),
    Cmp(String, Op, String),
    In(String, Vec<String>),
}

/// A parsed condition: OR of ANDs of terms. Empty means always true.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Condition {
    any: Vec<Vec<Term>>,
    source: String,
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl Condition {
    pub fn parse(src: &str) -> Result<Condition, String> {
        let mut any = Vec::new();
        if src.trim().is_empty() {
            return Ok(Condition::default());
        }
        for alt in src.split("||") {
            let mut all = Vec::new();
            for t in alt.split("&&") {
                all.push(Self::term(t.trim())?);
            }
            any.push(all);
        }
        Ok(Condition {
            any,
            source: src.trim().to_string(),
        })
    }

    fn term(t: &str) -> Result<Term, String> {
        if t.is_empty() {
            return Err("empty term".into());
        }
        if let Some((name, list)) = t.split_once(" in ") {
            let name = name.trim();
            let list = list.trim();
            let inner = list
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| format!("`{t}`: `in` needs a list like [a, b]"))?;
            if !ident_ok(name) {
                return Err(format!("`{t}`: bad name `{name}`"));
            }
            let items = inner
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            return Ok(Term::In(name.into(), items));
        }
        for (sym, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ] {
            if let Some((a, b)) = t.split_once(sym) {
                let a = a.trim();
                let b = b.trim().trim_matches('"');
                if !ident_ok(a) {
                    return Err(format!("`{t}`: bad name `{a}`"));
                }
                if b.is_empty() {
                    return Err(format!("`{t}`: missing value after {sym}"));
                }
                if matches!(op, Op::Ge | Op::Le | Op::Gt | Op::Lt) && b.parse::<f64>().is_err() {
                    return Err(format!("`{t}`: {sym} needs a number"));
                }
                return Ok(Term::Cmp(a.into(), op, b.into()));
            }
        }
        if let Some(n) = t.strip_prefix('!') {
            let n = n.trim();
            if !ident_ok(n) {
                return Err(format!("`{t}`: bad name `{n}`"));
            }
            return Ok(Term::Not(n.into()));
        }
        if !ident_ok(t) {
            return Err(format!("`{t}`: not a condition"));
        }
        Ok(Term::Truthy(t.into()))
    }

    /// Names the condition reads (checked against the known facts at load).
    pub fn names(&self) -> Vec<&str> {
        self.any
            .iter()
            .flatten()
            .map(|t| match t {
                Term::Truthy(n) | Term::Not(n) | Term::Cmp(n, _, _) | Term::In(n, _) => n.as_str(),
            })
            .collect()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Missing facts are false (and fail every comparison but `!=`).
    pub fn eval(&self, f: &Facts) -> bool {
        if self.any.is_empty() {
            return true;
        }
        self.any
            .iter()
            .any(|all| all.iter().all(|t| Self::eval_term(t, f)))
    }

    fn eval_term(t: &Term, f: &Facts) -> bool {
        match t {
            Term::Truthy(n) => f.get(n).is_some_and(Value::truthy),
            Term::Not(n) => !f.get(n).is_some_and(Value::truthy),
            Term::In(n, list) => f
                .get(n)
                .is_some_and(|v| list.iter().any(|x| *x == v.as_text())),
            Term::Cmp(n, op, lit) => {
                let Some(v) = f.get(n) else {
                    return *op == Op::Ne;
                };
                match op {
                    Op::Eq | Op::Ne => {
                        let eq = match (v.as_num(), lit.parse::<f64>()) {
                            (Some(a), Ok(b)) if !matches!(v, Value::Str(_)) => a == b,
                            _ => v.as_text() == *lit,
                        };
                        eq == (*op == Op::Eq)
                    }
                    _ => {
                        let (Some(a), Ok(b)) = (v.as_num(), lit.parse::<f64>()) else {
                            return false;
                        };
                        match op {
                            Op::Ge => a >= b,
                            Op::Le => a <= b,
                            Op::Gt => a > b,
                            Op::Lt => a < b,
                            _ => false,
                        }
                    }
                }
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Condition::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let mut f = Facts::new();
        f.insert("tier".into(), "gold".into());
        f.insert("sentiment".into(), Value::Num(-0.6));
        f.insert("recent_contacts".into(), Value::Num(1.0));
        f.insert("known".into(), true.into());
        f
    }

    #[test]
    fn evaluates_terms() {
        let f = facts();
        let t = |s: &str| Condition::parse(s).unwrap().eval(&f);
        assert!(t(
            "tier in [gold, platinum] && recent_contacts >= 1 && sentiment <= -0.3"
        ));
        assert!(!t("tier == silver"));
        assert!(t("tier == silver || known"));
        assert!(t("!missing && tier != silver"));
        assert!(!t("missing > 1"));
        assert!(t("missing != 1"));
        assert!(t(""));
    }

    #[test]
    fn rejects_bad_conditions() {
        for bad in ["tier >= gold", "a &&", "tier in gold", "x ==", "a b"] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }
}
