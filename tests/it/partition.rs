//! The mesh across network namespaces: a real partition, then healing.
