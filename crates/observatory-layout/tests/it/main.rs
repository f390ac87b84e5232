//! The drawing at its boundary: properties of fresh and extended layouts, and the SVG.

mod props;
mod svg;
