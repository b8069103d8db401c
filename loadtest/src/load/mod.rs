//! Load generation: an open-loop, constant-arrival-rate generator of Rank calls, and what
//! it records.

pub mod record;
