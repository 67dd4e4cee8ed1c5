//! `/metrics` as the tests read it: the samples of the OpenMetrics text,
//! looked up by name and labels.

use http::Method;

use crate::{Client, Node, ADMIN_TOKEN};

/// A sample: its name, its labels, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape's samples.
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Reads the node's `/metrics` (with [`ADMIN_TOKEN`]).
    pub async fn of(client: &Client, node: &Node) -> Scrape {
        let r = client
            .admin(node, Method::GET, "/metrics", Some(ADMIN_TOKEN), "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        Scrape::parse(&r.text())
    }

    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)),
                    None => (series, Vec::new()),
                };
                Some((name.to_string(), labels, value.parse().ok()?))
            })
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// The one sample of `name` with these labels; panics if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{}", self.text);
        found[0]
    }

    /// Whether any sample of `name` has these labels.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }
}

/// `a="x",b="y"` (values without escapes, as the node's are).
fn labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k.to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}
