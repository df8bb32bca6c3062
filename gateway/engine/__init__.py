"""The delivery engine: dispatching, retries and breakers, inbound callbacks, event webhooks, accepting notifications."""
