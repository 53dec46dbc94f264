//! TODO(objects): being written.
