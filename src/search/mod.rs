//! The architecture search by network morphism, as AutoKeras 0.3 did it: a Bayesian optimiser
//! over architectures ([`bayesian`], on a Gaussian process [`gp`]) proposes children of trained
//! models, each trained from its father's weights; a search directory ([`store`]) keeps every
//! result so a search can be resumed after any crash.

pub mod bayesian;
pub mod budget;
pub mod classifier;
pub mod duration;
pub mod ensemble;
pub mod gp;
pub mod options;
pub mod report;
pub mod searcher;
pub mod space;
pub mod store;

pub use bayesian::{BayesianConfig, BayesianOptimizer, Fantasy, Planner, Proposal, SearchSpace};
pub use budget::TimeBudget;
pub use duration::{format_duration, parse_duration};
pub use searcher::{search, wait_for_other_workers, Job, SearchConfig, SearchResult, Trained, Trainer};
pub use store::{BestModel, ModelRecord, PgStore, SearchDir, Status, Store};
