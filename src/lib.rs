pub mod event;
pub mod roster;
