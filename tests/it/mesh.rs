//! The mesh on loopback: real peers converging, crashing, losing disks, refusing strangers.
