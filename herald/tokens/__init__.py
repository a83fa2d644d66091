"""Provider credentials: opening them for a call, storing rotated ones, refreshing them."""
