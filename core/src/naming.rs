//! The names a virtual server hands to clients for its servers' tools, prompts and resources
//! (pure): the prefix mode, the length limit (shortened deterministically or refused), and
//! conflicts, which are never resolved by guessing: every item whose final name another item
//! also has is withheld. Admission applies it to the names the servers' specs list; the gateway
//! to their live listings.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::spec::{LongNames, Naming, PrefixMode};

/// One item a server lists: which server (its index) and its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub server: usize,
    pub name: String,
}

/// An item under the name clients see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub name: String,
    pub server: usize,
    pub original: String,
    /// The name was cut to the length limit.
    pub shortened: bool,
}

/// An item clients do not see, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    /// Several items would have this name (`servers`: which, in order).
    Conflict { name: String, servers: Vec<usize>, originals: Vec<String> },
    /// Longer than the limit, with `LongNames::Refuse`.
    TooLong { server: usize, original: String, name: String },
}

/// The result for one kind of item (tools, prompts, resources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub exposed: Vec<Exposed>,
    pub withheld: Vec<Withheld>,
}

impl Names {
    /// Which server an exposed name belongs to, and its own name there.
    pub fn route(&self, name: &str) -> Option<(usize, &str)> {
        self.exposed.iter().find(|e| e.name == name).map(|e| (e.server, e.original.as_str()))
    }

    /// The exposed name of a server's item.
    pub fn exposed_name(&self, server: usize, original: &str) -> Option<&str> {
        self.exposed
            .iter()
            .find(|e| e.server == server && e.original == original)
            .map(|e| e.name.as_str())
    }
}

/// `name` cut to `max` bytes with `-` and 8 hex digits of its SHA-256 at the end.
pub fn shorten(name: &str, max: usize) -> String {
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let mut head = max.saturating_sub(digest.len() + 1);
    while head > 0 && !name.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}-{digest}", &name[..head])
}

/// The names clients see for `listed`, each server prefixed by `prefixes[server]`.
pub fn expose(naming: &Naming, prefixes: &[String], listed: &[Listed]) -> Names {
    let mut listed = listed.to_vec();
    listed.sort();
    listed.dedup();
    let mut servers_of: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &listed {
        *servers_of.entry(l.name.as_str()).or_default() += 1;
    }
    let max = naming.max_length as usize;
    let mut out = Names::default();
    let mut candidates: Vec<Exposed> = Vec::new();
    for l in &listed {
        let prefixed = match naming.prefix {
            PrefixMode::Always => true,
            PrefixMode::OnConflict => servers_of.get(l.name.as_str()).copied().unwrap_or(0) > 1,
            PrefixMode::Never => false,
        };
        let prefix = prefixes.get(l.server).map(String::as_str).unwrap_or_default();
        let full = if prefixed {
            format!("{prefix}{}{}", naming.separator, l.name)
        } else {
            l.name.clone()
        };
        if full.len() <= max {
            candidates.push(Exposed {
                name: full,
                server: l.server,
                original: l.name.clone(),
                shortened: false,
            });
            continue;
        }
        match naming.long_names {
            LongNames::Shorten => candidates.push(Exposed {
                name: shorten(&full, max),
                server: l.server,
                original: l.name.clone(),
                shortened: true,
            }),
            LongNames::Refuse => out.withheld.push(Withheld::TooLong {
                server: l.server,
                original: l.name.clone(),
                name: full,
            }),
        }
    }
    let mut by_name: BTreeMap<String, Vec<Exposed>> = BTreeMap::new();
    for c in candidates {
        by_name.entry(c.name.clone()).or_default().push(c);
    }
    for (name, items) in by_name {
        if items.len() == 1 {
            out.exposed.extend(items);
        } else {
            out.withheld.push(Withheld::Conflict {
                name,
                servers: items.iter().map(|i| i.server).collect(),
                originals: items.into_iter().map(|i| i.original).collect(),
            });
        }
    }
    out
}

impl Withheld {
    /// What a status condition or a log line says about it, with the servers' names.
    pub fn describe(&self, servers: &[String]) -> String {
        let name_of = |i: &usize| servers.get(*i).cloned().unwrap_or_else(|| format!("#{i}"));
        match self {
            Withheld::Conflict { name, servers: s, originals } => {
                let who: Vec<String> =
                    s.iter().zip(originals).map(|(i, o)| format!("{}/{o}", name_of(i))).collect();
                format!("{name} is listed by {}", who.join(" and "))
            }
            Withheld::TooLong { server, original, name } => {
                format!(
                    "{}/{original} would be {name} ({} characters)",
                    name_of(server),
                    name.len()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(items: &[(usize, &str)]) -> Vec<Listed> {
        items.iter().map(|(s, n)| Listed { server: *s, name: n.to_string() }).collect()
    }

    fn names(n: &Names) -> Vec<(String, usize, String)> {
        n.exposed.iter().map(|e| (e.name.clone(), e.server, e.original.clone())).collect()
    }

    fn prefixes() -> Vec<String> {
        vec!["weather".into(), "tickets".into()]
    }

    #[test]
    fn always_prefixes_every_name_and_routes_back() {
        let n = expose(
            &Naming::default(),
            &prefixes(),
            &listed(&[(0, "echo"), (1, "echo"), (1, "add")]),
        );
        assert_eq!(
            names(&n),
            vec![
                ("tickets_add".into(), 1, "add".into()),
                ("tickets_echo".into(), 1, "echo".into()),
                ("weather_echo".into(), 0, "echo".into()),
            ]
        );
        assert!(n.withheld.is_empty());
        assert_eq!(n.route("weather_echo"), Some((0, "echo")));
        assert_eq!(n.route("echo"), None);
        assert_eq!(n.exposed_name(1, "add"), Some("tickets_add"));
    }

    #[test]
    fn on_conflict_prefixes_only_shared_names_and_never_withholds_them() {
        let on = Naming { prefix: PrefixMode::OnConflict, ..Naming::default() };
        let n = expose(&on, &prefixes(), &listed(&[(0, "echo"), (1, "echo"), (1, "add")]));
        assert_eq!(
            names(&n),
            vec![
                ("add".into(), 1, "add".into()),
                ("tickets_echo".into(), 1, "echo".into()),
                ("weather_echo".into(), 0, "echo".into()),
            ]
        );
        let never = Naming { prefix: PrefixMode::Never, ..Naming::default() };
        let n = expose(&never, &prefixes(), &listed(&[(0, "echo"), (1, "echo"), (1, "add")]));
        assert_eq!(names(&n), vec![("add".into(), 1, "add".into())]);
        assert_eq!(
            n.withheld,
            vec![Withheld::Conflict {
                name: "echo".into(),
                servers: vec![0, 1],
                originals: vec!["echo".into(), "echo".into()]
            }]
        );
        assert_eq!(
            n.withheld[0].describe(&prefixes()),
            "echo is listed by weather/echo and tickets/echo"
        );
    }

    #[test]
    fn prefixes_that_collide_withhold_both_items() {
        // "a" + "_" + "b_c" and "a_b" + "_" + "c" are the same name.
        let p = vec!["a".to_string(), "a_b".to_string()];
        let n = expose(&Naming::default(), &p, &listed(&[(0, "b_c"), (1, "c"), (1, "d")]));
        assert_eq!(names(&n), vec![("a_b_d".into(), 1, "d".into())]);
        assert!(matches!(&n.withheld[0], Withheld::Conflict { name, .. } if name == "a_b_c"));
    }

    #[test]
    fn long_names_are_shortened_deterministically_or_refused() {
        let long = "x".repeat(70);
        let n = expose(&Naming::default(), &prefixes(), &listed(&[(0, &long), (0, "short")]));
        let cut = n.exposed.iter().find(|e| e.original == long).unwrap();
        assert_eq!(cut.name.len(), 64);
        assert!(cut.shortened);
        assert!(cut.name.starts_with("weather_xxx"));
        assert_eq!(cut.name, shorten(&format!("weather_{long}"), 64), "the same every time");
        assert_ne!(shorten(&format!("weather_{long}y"), 64), cut.name);
        let refuse = Naming { long_names: LongNames::Refuse, ..Naming::default() };
        let n = expose(&refuse, &prefixes(), &listed(&[(0, &long), (0, "short")]));
        assert_eq!(names(&n), vec![("weather_short".into(), 0, "short".into())]);
        assert!(matches!(&n.withheld[0], Withheld::TooLong { server: 0, .. }));
        // Multi-byte names are cut on a character boundary.
        let wide = "é".repeat(40);
        assert!(shorten(&wide, 64).len() <= 64);
    }
}
