pub mod reading;
pub mod sources;
