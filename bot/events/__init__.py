"""From a webhook event to what nofx does: router composition, event context, command parsing, triggers, conversation verbs."""
