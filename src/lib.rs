pub mod message;
pub mod outbox;
pub mod upstream;
