"""The fuzz tier's builders: reproducible generation (corpus), malformed inputs and models, and the child process that reads them."""
