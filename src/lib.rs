//! TEMPORARY (branch `images`): the lead's lib.rs replaces this on merge.
pub mod pgboot;
