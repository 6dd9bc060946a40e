//! ArtStore query role: full-text search over every document's metadata and content
//! (tantivy), fed by the elements' events and rebuildable from their listings, and reads
//! of files, content and versions through to the element that holds them.

pub mod api;
pub mod config;
pub mod doc;
pub mod extractor;
pub mod feed;
pub mod highlight;
pub mod index;
pub mod schema;
pub mod search;
pub mod server;
pub mod service;
pub mod suggest;
pub mod syntax;
