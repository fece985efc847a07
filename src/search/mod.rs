//! The architecture search by network morphism, as AutoKeras 0.3 did it: a Bayesian optimiser
//! over architectures ([`bayesian`], on a Gaussian process [`gp`]) proposes children of trained
//! models, each trained from its father's weights. A store ([`store`]: a locked search directory
//! for one process, or a PostgreSQL study that any number of workers share) keeps every result, so
//! a search survives any crash and many workers can run one search.

pub mod bayesian;
pub mod budget;
pub mod classifier;
pub mod duration;
pub mod ensemble;
pub mod gp;
pub mod options;
pub mod ranking;
pub mod report;
pub mod searcher;
pub mod space;
pub mod store;

pub use bayesian::{BayesianConfig, BayesianOptimizer, Fantasy, Planner, Proposal, SearchSpace};
pub use budget::TimeBudget;
pub use duration::{format_duration, parse_duration};
pub use ranking::EarlyRanking;
pub use searcher::{search, wait_for_other_workers, Job, SearchConfig, SearchResult, Trained, Trainer};
pub use store::{BestModel, ModelRecord, PgStore, SearchDir, Status, Store};
