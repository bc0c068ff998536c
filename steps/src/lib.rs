//! servegraph's built-in steps. [`registry`] gives every built-in kind by name; add custom
//! kinds to it with [`servegraph_engine::Registry::register`].

pub mod bandit;
pub mod contextual;
pub mod ensemble;
pub mod error_handler;
pub mod evaluate;
pub mod fuzz;
pub mod image;
pub mod model;
pub mod remote;
pub mod router;
pub mod routes;
pub mod transform;

use servegraph_engine::Registry;

/// The built-in step kinds: `model`, `router`, `ensemble`, `transform`, `error_handler`,
/// `python`, `task` (MLRun's flow steps).
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("model", model::build)
        .register("router", router::build)
        .register("ensemble", ensemble::build)
        .register("transform", transform::build)
        .register("error_handler", error_handler::build)
        .register("python", model::python::build_step)
        .register("task", model::python::build_task);
    r.set_schema("model", model::schema())
        .set_schema("router", router::schema())
        .set_schema("ensemble", schema_of::<ensemble::EnsembleSpec>())
        .set_schema("transform", transform::schema())
        .set_schema(
            "error_handler",
            schema_of::<error_handler::ErrorHandlerSpec>(),
        )
        .set_schema("python", schema_of::<model::python::PythonStepSpec>())
        .set_schema("task", schema_of::<model::python::TaskSpec>());
    r
}

fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}
