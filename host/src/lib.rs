//! Outpost: a programmable CDN edge node.
//!
//! The modules follow the request path: [`server`] accepts connections and
//! hands each request to [`proxy`], which finds the [`tenant`], runs its
//! policy in the wasm [`runtime`], consults the [`cache`] and fetches from
//! [`origin`]s. [`config`] and [`cli`] set a node up; [`node`] ties the parts
//! together.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo_origin;
pub mod dev;
pub mod guests;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod preview;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod tenant;
