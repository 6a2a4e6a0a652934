"""The reliability tier's scenarios (gates A-D), the combined gate's runtime process, and the report they write."""
