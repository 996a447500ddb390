"""The sandbox's servers, started as processes: real ones (rclone, oidc-provider-mock) through
thin starters, and contract-faithful ones (Onedata) where the real service cannot run here."""
