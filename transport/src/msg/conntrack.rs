//! conntrackd's messages: tracked connections of public addresses.
