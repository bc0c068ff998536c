//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition, encoded by
//! `prometheus-client`. What routers learn is read from them at scrape time, so requests pay
//! nothing for it. Labels are the graph's own names (graph, router, route, policy), never a
//! request's.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `servegraph_router_requests_total` | counter | graph, router, policy, route |
//! | `servegraph_router_rewards_total` | counter | graph, router, policy, route |
//! | `servegraph_router_reward_sum` | gauge | graph, router, policy, route |
//! | `servegraph_router_estimate` | gauge (bandits) | graph, router, policy, route |
//! | `servegraph_router_shadow_copies_total` | counter | graph, router, route, result |

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::graph::Graph;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric, for the graph being served (if any).
pub fn render(graph: Option<Arc<Graph>>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    if let Some(graph) = graph {
        registry.register_collector(Box::new(Routers(graph)));
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The routers of a graph, read at scrape time.
struct Routers(Arc<Graph>);

impl fmt::Debug for Routers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Routers({})", self.0.name)
    }
}

type Labels = Vec<(&'static str, String)>;

/// One sample of a family: its labels and value.
enum Sample {
    Counter(Labels, u64),
    Gauge(Labels, f64),
}

impl Collector for Routers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut families: [(&str, &str, MetricType, Vec<Sample>); 5] = [
            (
                "servegraph_router_requests",
                "Requests a router sent to each route.",
                MetricType::Counter,
                Vec::new(),
            ),
            (
                "servegraph_router_rewards",
                "Rewards (feedback) a router took for each route, its replicas' included when shared.",
                MetricType::Counter,
                Vec::new(),
            ),
            (
                "servegraph_router_reward_sum",
                "The sum of the rewards taken for each route.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_estimate",
                "What a bandit policy currently believes each route is worth.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_shadow_copies",
                "Copies of requests for a shadow route: sent, skipped (too many in flight), failed.",
                MetricType::Counter,
                Vec::new(),
            ),
        ];
        for (_, step) in self.0.learners() {
            let Some(stats) = step.stats() else { continue };
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let router = text(&stats["router"]);
            let policy = text(&stats["policy"]);
            for r in stats["routes"].as_array().into_iter().flatten() {
                let labels: Labels = vec![
                    ("graph", self.0.name.clone()),
                    ("router", router.clone()),
                    ("policy", policy.clone()),
                    ("route", text(&r["route"])),
                ];
                let count = |k: &str| r[k].as_u64().unwrap_or(0);
                families[0]
                    .3
                    .push(Sample::Counter(labels.clone(), count("pulls")));
                families[1]
                    .3
                    .push(Sample::Counter(labels.clone(), count("rewards")));
                let sum = r["reward_sum"].as_f64().unwrap_or(0.0);
                families[2].3.push(Sample::Gauge(labels.clone(), sum));
                if let Some(e) = r["estimate"].as_f64() {
                    families[3].3.push(Sample::Gauge(labels, e));
                }
            }
            if let Some(sh) = stats.get("shadow") {
                for result in ["sent", "skipped", "failed"] {
                    let labels: Labels = vec![
                        ("graph", self.0.name.clone()),
                        ("router", router.clone()),
                        ("route", text(&sh["route"])),
                        ("result", result.to_owned()),
                    ];
                    let n = sh[result].as_u64().unwrap_or(0);
                    families[4].3.push(Sample::Counter(labels, n));
                }
            }
        }
        for (name, help, kind, samples) in &families {
            if samples.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(name, help, None, *kind)?;
            for sample in samples {
                match sample {
                    Sample::Counter(labels, v) => {
                        ConstCounter::new(*v).encode(metric.encode_family(labels)?)?
                    }
                    Sample::Gauge(labels, v) => {
                        ConstGauge::new(*v).encode(metric.encode_family(labels)?)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::event::Event;
    use crate::step::{BuildContext, BuildMode, Registry, Step, StepNode};

    /// A step with a router's stats.
    struct Learnt;

    #[async_trait::async_trait]
    impl Step for Learnt {
        async fn process(&self, e: Event) -> crate::Result<Event> {
            Ok(e)
        }
        fn stats(&self) -> Option<Value> {
            Some(serde_json::json!({
                "router": "ab", "policy": "thompson",
                "routes": [
                    {"route": "a", "pulls": 7, "rewards": 3, "reward_sum": 1.5, "estimate": 0.25},
                    {"route": "b", "pulls": 2, "rewards": 0, "reward_sum": 0.0, "estimate": 0.5}
                ],
                "shadow": {"route": "c", "sent": 4, "skipped": 1, "failed": 0}
            }))
        }
    }

    #[test]
    fn router_stats_are_exported() {
        let mut r = Registry::new();
        r.register("learnt", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Learnt) as Box<dyn Step>)
        });
        let g = Graph::from_yaml(
            "name: g\ngraph:\n  kind: flow\n  steps: {ab: {kind: learnt}}\n",
            Path::new("."),
            &r,
            BuildMode::Load,
        )
        .unwrap();
        let text = render(Some(Arc::new(g))).unwrap();
        for line in [
            "# TYPE servegraph_router_requests counter",
            r#"servegraph_router_requests_total{graph="g",router="ab",policy="thompson",route="a"} 7"#,
            r#"servegraph_router_rewards_total{graph="g",router="ab",policy="thompson",route="b"} 0"#,
            r#"servegraph_router_reward_sum{graph="g",router="ab",policy="thompson",route="a"} 1.5"#,
            r#"servegraph_router_estimate{graph="g",router="ab",policy="thompson",route="b"} 0.5"#,
            r#"servegraph_router_shadow_copies_total{graph="g",router="ab",route="c",result="skipped"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(render(None).unwrap(), "# EOF\n");
    }
}
