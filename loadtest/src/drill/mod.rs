//! Disaster-recovery drills: real faults injected into a running cluster under steady load,
//! measured for what users would have seen.

pub mod model;
