//! masterd starts and watches the daemons of one node, as separate processes or
//! as tasks of one process over the in-process router.

pub mod backoff;
pub mod supervisor;
