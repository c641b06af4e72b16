//! Instance segmentation: EDT, connected components, marker watershed, per-nucleus criteria.
