//! clusterd's messages: membership, node flags, administration.
