"""The CA hierarchy: the Authority (root, intermediates, their keys), rollover, the offline root."""
