"""Plugin decoders the tests name as ``plugin:support.decoders.<module>:<function>``, as a user names their own module."""
