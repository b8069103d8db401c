//! Load generation: an open-loop, constant-arrival-rate generator of Rank calls
//! ([`generator`]), what it records ([`record`]), and `rankload load` ([`cli`]).

pub mod cli;
pub mod codes;
pub mod generator;
pub mod record;
mod report;

#[cfg(test)]
mod tests;
