"""Pure scheduling logic: availability, slots, the appointment lifecycle."""
