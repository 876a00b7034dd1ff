//! Metric operations (`$METRICS_PATH`): one JSON object per line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A line of a metrics file the runner would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct MetricsError {
    /// The line (1-based).
    pub line: usize,
    /// The parser's message, quoted values redacted.
    pub message: String,
}

/// What to do with a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricAction {
    /// Gauge set.
    Set,
    /// Counter add.
    Add,
    /// Histogram observation.
    Observe,
    /// Drop every metric of a group.
    Expire,
}

/// One metric operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricOperation {
    /// Metric name (absent for `expire`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Group; metrics of a group are expired together.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The action.
    pub action: MetricAction,
    /// The value (absent for `expire`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Histogram buckets for `observe`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Collects metric operations in order.
#[derive(Clone, Debug, Default)]
pub struct MetricsCollector {
    ops: Vec<MetricOperation>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MetricsCollector {
    fn push(
        &mut self,
        group: &str,
        name: &str,
        action: MetricAction,
        value: f64,
        l: &[(&str, &str)],
    ) {
        self.ops.push(MetricOperation {
            name: name.into(),
            group: group.into(),
            action,
            value: Some(value),
            buckets: vec![],
            labels: labels(l),
        });
    }

    /// Sets a gauge, optionally in a group (`""` = none).
    pub fn set(&mut self, group: &str, name: &str, value: f64, labels: &[(&str, &str)]) {
        self.push(group, name, MetricAction::Set, value, labels)
    }

    /// Adds to a counter.
    pub fn add(&mut self, group: &str, name: &str, value: f64, labels: &[(&str, &str)]) {
        self.push(group, name, MetricAction::Add, value, labels)
    }

    /// Observes a histogram value.
    pub fn observe(
        &mut self,
        group: &str,
        name: &str,
        value: f64,
        buckets: &[f64],
        labels: &[(&str, &str)],
    ) {
        self.push(group, name, MetricAction::Observe, value, labels);
        self.ops.last_mut().expect("just pushed").buckets = buckets.to_vec();
    }

    /// Drops every metric of `group`.
    pub fn expire(&mut self, group: &str) {
        self.ops.push(MetricOperation {
            name: String::new(),
            group: group.into(),
            action: MetricAction::Expire,
            value: None,
            buckets: vec![],
            labels: BTreeMap::new(),
        });
    }

    /// The recorded operations.
    pub fn operations(&self) -> &[MetricOperation] {
        &self.ops
    }
}

/// Parses a metrics file: one JSON object per line (blank lines ignored).
pub fn parse_metric_operations(text: &str) -> Result<Vec<MetricOperation>, MetricsError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| MetricsError {
                line: i + 1,
                message: crate::log::redact(&e.to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_serialise_as_the_runner_reads_them() {
        let mut m = MetricsCollector::default();
        m.expire("certs");
        m.set("certs", "cert_expiry_seconds", 42.0, &[("name", "ca")]);
        m.add("", "runs_total", 1.0, &[]);
        m.observe("", "duration_seconds", 0.3, &[0.1, 1.0], &[]);
        let lines: Vec<String> = m
            .operations()
            .iter()
            .map(|o| serde_json::to_string(o).unwrap())
            .collect();
        assert_eq!(lines[0], r#"{"group":"certs","action":"expire"}"#);
        assert_eq!(
            lines[1],
            r#"{"name":"cert_expiry_seconds","group":"certs","action":"set","value":42.0,"labels":{"name":"ca"}}"#
        );
        assert!(lines[3].contains("\"buckets\":[0.1,1.0]"));
        let back = parse_metric_operations(&lines.join("\n")).unwrap();
        assert_eq!(back, m.operations());
        assert!(parse_metric_operations("{\"action\":\"explode\"}").is_err());
    }
}
