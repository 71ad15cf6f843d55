//! spearlet's gRPC contract, generated at build time from `proto/`.
//!
//! - [`spearlet`]: `spearlet.FunctionService`, the API clients call —
//!   wire-compatible with the SPEAR project's spearlet — and
//!   `spearlet.admin.v1.AdminService`, our own (task upgrades);
//! - [`node`]: today's SPEAR node API (`spearlet.InvocationService`,
//!   `spearlet.ExecutionService`, `spearlet.InstanceService`), which the
//!   SPEAR metadata server's endpoint gateway and web admin call; same
//!   package as [`spearlet`], other definitions, so a module of its own;
//! - [`sms`]: the SPEAR metadata server's `sms.TaskService`,
//!   `sms.NodeService` and execution/instance registries, which spearlet
//!   calls as a client when it joins a cluster (servers are generated too,
//!   for tests that play the SMS).
//!
//! Only spearlet's API layer and CLI client use these types; the host works
//! on plain Rust domain types.

#![allow(missing_docs, clippy::doc_markdown)]

/// `package spearlet`.
pub mod spearlet {
    tonic::include_proto!("spearlet");

    /// spearlet's own APIs.
    pub mod admin {
        /// `package spearlet.admin.v1`: `AdminService` (upgrades, rollbacks).
        pub mod v1 {
            tonic::include_proto!("spearlet.admin.v1");
        }
    }
}

/// `package spearlet` as SPEAR's node serves it today (`proto/spearlet/node/`).
pub mod node {
    include!(concat!(env!("OUT_DIR"), "/node/spearlet.rs"));

    /// The encoded `FileDescriptorSet` of this API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/node/descriptor.bin"));
}

/// `package sms`.
pub mod sms {
    tonic::include_proto!("sms");
}

/// The encoded `FileDescriptorSet` of every package but [`node`], for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
