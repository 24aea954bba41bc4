//! A declarative search space: named categorical decisions with constraints, read from TOML or
//! JSON, and the architectures (one choice per decision) drawn from it.
//!
//! ```toml
//! [[decisions]]
//! name = "blocks"
//! choices = [2, 3, 4]
//!
//! [[decisions]]
//! name = "filters"
//! choices = [16, 32, 64]
//!
//! # "if blocks is 4 then filters must be 16 or 32"
//! [[constraints]]
//! if = { decision = "blocks", in = [4] }
//! then = { decision = "filters", in = [16, 32] }
//! ```
//!
//! Every constraint is an implication between two conditions ("decision takes one of these
//! values"); a space whose constraints no architecture satisfies is rejected when loaded.

use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One choice value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean (e.g. skip connections on/off).
    Bool(bool),
    /// An integer (e.g. a width).
    Int(i64),
    /// A real number (e.g. a dropout rate).
    Float(f64),
    /// A name (e.g. an activation).
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => write!(f, "{s}"),
        }
    }
}

impl Value {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A named categorical decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Unique name.
    pub name: String,
    /// The values it can take (non-empty, distinct).
    pub choices: Vec<Value>,
}

/// "`decision` takes one of `values`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A decision's name.
    pub decision: String,
    /// Allowed values (each one of the decision's choices).
    #[serde(rename = "in")]
    pub values: Vec<Value>,
}

/// `if` ⇒ `then`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Premise.
    #[serde(rename = "if")]
    pub when: Condition,
    /// Conclusion.
    #[serde(rename = "then")]
    pub then: Condition,
}

/// The space as written in a file (unknown keys are errors: a typo such as `[[constraint]]`
/// must not silently drop every constraint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    decisions: Vec<Decision>,
    #[serde(default)]
    constraints: Vec<Constraint>,
}

/// A compiled constraint: decision indices and allowed choice masks.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    if_decision: usize,
    if_allowed: Vec<bool>,
    then_decision: usize,
    then_allowed: Vec<bool>,
}

impl Rule {
    /// Whether `choices` (possibly partial: `None` = undecided) violates the rule.
    fn violated(&self, choices: &[Option<usize>]) -> bool {
        match (choices[self.if_decision], choices[self.then_decision]) {
            (Some(a), Some(b)) => self.if_allowed[a] && !self.then_allowed[b],
            _ => false,
        }
    }

    /// Make `domains` arc-consistent with this rule; whether anything was removed.
    fn prune(&self, domains: &mut [Vec<bool>]) -> bool {
        let (a, b) = (self.if_decision, self.then_decision);
        let mut changed = false;
        if a == b {
            for (v, on) in domains[a].iter_mut().enumerate() {
                if *on && self.if_allowed[v] && !self.then_allowed[v] {
                    *on = false;
                    changed = true;
                }
            }
            return changed;
        }
        // A value of `a` in the premise needs a value of `b` in the conclusion.
        let b_can = domains[b]
            .iter()
            .zip(&self.then_allowed)
            .any(|(on, ok)| *on && *ok);
        if !b_can {
            for (v, on) in domains[a].iter_mut().enumerate() {
                if *on && self.if_allowed[v] {
                    *on = false;
                    changed = true;
                }
            }
        }
        // If every remaining value of `a` triggers the premise, `b` must be in the conclusion.
        let a_forced = domains[a]
            .iter()
            .zip(&self.if_allowed)
            .all(|(on, trig)| !*on || *trig);
        if a_forced {
            for (v, on) in domains[b].iter_mut().enumerate() {
                if *on && !self.then_allowed[v] {
                    *on = false;
                    changed = true;
                }
            }
        }
        changed
    }
}

/// Search nodes a constraint check may visit before giving up ([`Error::InvalidSpace`]): with
/// arc-consistency pruning, real spaces need a handful per decision.
pub const MAX_SEARCH_NODES: usize = 1_000_000;

/// An architecture: the index of the chosen value of every decision, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Architecture(pub Vec<usize>);

/// A validated search space.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    decisions: Vec<Decision>,
    constraints: Vec<Constraint>,
    rules: Vec<Rule>,
    /// The first valid architecture (found when the space is built).
    first: Architecture,
}

impl SearchSpace {
    /// Build and validate a space.
    ///
    /// Errors ([`Error::InvalidSpace`]): no decisions, a decision without choices, duplicate
    /// decision names or choices, a constraint naming an unknown decision or a value that is not
    /// one of its choices, or constraints that no architecture satisfies.
    pub fn new(decisions: Vec<Decision>, constraints: Vec<Constraint>) -> Result<Self> {
        let bad = |m: String| Err(Error::InvalidSpace(m));
        if decisions.is_empty() {
            return bad("the space has no decisions".into());
        }
        for (i, d) in decisions.iter().enumerate() {
            if d.name.trim().is_empty() {
                return bad(format!("decision {} has an empty name", i + 1));
            }
            if let Some(v) = d
                .choices
                .iter()
                .find(|v| matches!(v, Value::Float(x) if !x.is_finite()))
            {
                return bad(format!(
                    "decision `{}` has a choice that is not a finite number: {v}",
                    d.name
                ));
            }
            if d.choices.is_empty() {
                return bad(format!("decision `{}` has no choices", d.name));
            }
            if decisions[..i].iter().any(|e| e.name == d.name) {
                return bad(format!("decision `{}` is declared twice", d.name));
            }
            for (k, c) in d.choices.iter().enumerate() {
                if d.choices[..k].contains(c) {
                    return bad(format!("decision `{}` lists choice {c} twice", d.name));
                }
            }
        }
        let compile = |c: &Condition| -> Result<(usize, Vec<bool>)> {
            let i = decisions
                .iter()
                .position(|d| d.name == c.decision)
                .ok_or_else(|| {
                    Error::InvalidSpace(format!(
                        "constraint names unknown decision `{}`",
                        c.decision
                    ))
                })?;
            let d = &decisions[i];
            let mut mask = vec![false; d.choices.len()];
            for v in &c.values {
                let k = d.choices.iter().position(|x| x == v).ok_or_else(|| {
                    Error::InvalidSpace(format!(
                        "constraint value {v} is not a choice of `{}`",
                        d.name
                    ))
                })?;
                mask[k] = true;
            }
            if c.values.is_empty() {
                return Err(Error::InvalidSpace(format!(
                    "constraint on `{}` lists no values",
                    d.name
                )));
            }
            Ok((i, mask))
        };
        let rules = constraints
            .iter()
            .map(|c| {
                let (if_decision, if_allowed) = compile(&c.when)?;
                let (then_decision, then_allowed) = compile(&c.then)?;
                Ok(Rule {
                    if_decision,
                    if_allowed,
                    then_decision,
                    then_allowed,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut space = Self {
            decisions,
            constraints,
            rules,
            first: Architecture(Vec::new()),
        };
        space.first = space.first_valid()?.ok_or_else(|| {
            Error::InvalidSpace("no architecture satisfies the constraints".into())
        })?;
        Ok(space)
    }

    /// Parse a space from TOML.
    pub fn from_toml(text: &str) -> Result<Self> {
        let f: SpaceFile = toml::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        Self::new(f.decisions, f.constraints)
    }

    /// Parse a space from JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        let f: SpaceFile = serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        Self::new(f.decisions, f.constraints)
    }

    /// The space as TOML (parses back to an equal space).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(&self.file()).map_err(|e| Error::Parse(e.to_string()))
    }

    /// The space as JSON (parses back to an equal space).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.file()).map_err(|e| Error::Parse(e.to_string()))
    }

    fn file(&self) -> SpaceFile {
        SpaceFile {
            decisions: self.decisions.clone(),
            constraints: self.constraints.clone(),
        }
    }

    /// The decisions, in order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Number of architectures without constraints (the product of the choice counts).
    pub fn unconstrained_size(&self) -> f64 {
        self.decisions
            .iter()
            .map(|d| d.choices.len() as f64)
            .product()
    }

    /// Whether `arch` has one valid choice per decision and satisfies every constraint.
    pub fn is_valid(&self, arch: &Architecture) -> bool {
        arch.0.len() == self.decisions.len()
            && arch
                .0
                .iter()
                .zip(&self.decisions)
                .all(|(&c, d)| c < d.choices.len())
            && self.consistent(&arch.0.iter().map(|&c| Some(c)).collect::<Vec<_>>())
    }

    /// Checked: an error naming the problem when `arch` is not valid.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        if self.is_valid(arch) {
            Ok(())
        } else {
            Err(Error::InvalidArchitecture(format!("{:?}", arch.0)))
        }
    }

    fn consistent(&self, partial: &[Option<usize>]) -> bool {
        !self.rules.iter().any(|r| r.violated(partial))
    }

    /// Remove from `domains` every value that no value of a constrained neighbour supports
    /// (arc consistency, to a fixpoint); `false` when a decision is left without a value.
    fn propagate(&self, domains: &mut [Vec<bool>]) -> bool {
        loop {
            let mut changed = false;
            for r in &self.rules {
                changed |= r.prune(domains);
            }
            if domains.iter().any(|d| !d.contains(&true)) {
                return false;
            }
            if !changed {
                return true;
            }
        }
    }

    /// Depth-first search for an assignment within `domains` (decisions in order, choices in
    /// the order given by `order(decision)`), maintaining arc consistency after every choice, so
    /// that dead ends are seen early. `Ok(None)`: no assignment exists; `Err`: more than
    /// [`MAX_SEARCH_NODES`] nodes visited.
    fn complete(
        &self,
        domains: Vec<Vec<bool>>,
        at: usize,
        order: &mut dyn FnMut(usize) -> Vec<usize>,
        budget: &mut usize,
    ) -> Result<Option<Vec<usize>>> {
        if at == self.decisions.len() {
            return Ok(Some(
                domains
                    .iter()
                    .map(|d| d.iter().position(|&on| on).unwrap_or(0))
                    .collect(),
            ));
        }
        for c in order(at) {
            if !domains[at][c] {
                continue;
            }
            *budget = budget.checked_sub(1).ok_or_else(|| {
                Error::InvalidSpace(format!(
                    "the constraints are too hard to check: no answer after {MAX_SEARCH_NODES} \
                     search steps ({} decisions, {} constraints); simplify them",
                    self.decisions.len(),
                    self.rules.len()
                ))
            })?;
            let mut next = domains.clone();
            next[at] = (0..next[at].len()).map(|k| k == c).collect();
            if self.propagate(&mut next) {
                if let Some(found) = self.complete(next, at + 1, order, budget)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    fn search(&self, order: &mut dyn FnMut(usize) -> Vec<usize>) -> Result<Option<Architecture>> {
        let mut domains: Vec<Vec<bool>> = self
            .decisions
            .iter()
            .map(|d| vec![true; d.choices.len()])
            .collect();
        if !self.propagate(&mut domains) {
            return Ok(None);
        }
        let mut budget = MAX_SEARCH_NODES;
        Ok(self
            .complete(domains, 0, order, &mut budget)?
            .map(Architecture))
    }

    fn first_valid(&self) -> Result<Option<Architecture>> {
        let n: Vec<usize> = self.decisions.iter().map(|d| d.choices.len()).collect();
        self.search(&mut |i| (0..n[i]).collect())
    }

    /// A uniformly random choice per decision, in order, re-drawn where a constraint forbids it
    /// (constraint-aware sequential sampling; uniform over the space when there are no
    /// constraints). In a space whose constraints exhaust the search budget (see
    /// [`MAX_SEARCH_NODES`]) the draw falls back to the first valid architecture.
    pub fn sample(&self, rng: &mut impl Rng) -> Architecture {
        let n: Vec<usize> = self.decisions.iter().map(|d| d.choices.len()).collect();
        match self.search(&mut |i| shuffled(n[i], rng)) {
            Ok(Some(a)) => a,
            _ => self.first.clone(),
        }
    }

    /// Change one decision (chosen uniformly among those that can change) to another value,
    /// keeping the constraints; `None` when no single change is valid.
    pub fn mutate(&self, arch: &Architecture, rng: &mut impl Rng) -> Option<Architecture> {
        let decisions = shuffled(self.decisions.len(), rng);
        for i in decisions {
            let mut options: Vec<usize> = (0..self.decisions[i].choices.len())
                .filter(|&c| c != arch.0[i])
                .collect();
            // Shuffle the alternatives, then take the first that keeps the constraints.
            let order = shuffled(options.len(), rng);
            options = order.into_iter().map(|k| options[k]).collect();
            for c in options {
                let mut next = arch.clone();
                next.0[i] = c;
                if self.is_valid(&next) {
                    return Some(next);
                }
            }
        }
        None
    }

    /// `name → value` of an architecture.
    pub fn describe(&self, arch: &Architecture) -> BTreeMap<String, Value> {
        self.decisions
            .iter()
            .zip(&arch.0)
            .filter_map(|(d, &c)| Some((d.name.clone(), d.choices.get(c)?.clone())))
            .collect()
    }

    /// One line: `name=value, …` in declaration order.
    pub fn label(&self, arch: &Architecture) -> String {
        self.decisions
            .iter()
            .zip(&arch.0)
            .map(|(d, &c)| {
                let v = d.choices.get(c).map_or("?".into(), ToString::to_string);
                format!("{}={v}", d.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The value `arch` takes for `name`.
    pub fn value(&self, arch: &Architecture, name: &str) -> Result<&Value> {
        let i = self
            .decisions
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| Error::InvalidSpace(format!("no decision `{name}`")))?;
        self.decisions[i]
            .choices
            .get(arch.0.get(i).copied().unwrap_or(usize::MAX))
            .ok_or_else(|| Error::InvalidArchitecture(format!("{:?}", arch.0)))
    }

    /// Every valid architecture (for small spaces: exhaustive checks and synthetic landscapes).
    ///
    /// Errors: spaces with more than `limit` unconstrained architectures.
    pub fn enumerate(&self, limit: usize) -> Result<Vec<Architecture>> {
        if self.unconstrained_size() > limit as f64 {
            return Err(Error::InvalidSpace(format!(
                "{} architectures is more than the limit {limit}",
                self.unconstrained_size()
            )));
        }
        let n: Vec<usize> = self.decisions.iter().map(|d| d.choices.len()).collect();
        let mut out = Vec::new();
        let mut idx = vec![0usize; n.len()];
        loop {
            let a = Architecture(idx.clone());
            if self.is_valid(&a) {
                out.push(a);
            }
            let mut k = n.len();
            loop {
                if k == 0 {
                    return Ok(out);
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < n[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

fn shuffled(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}
