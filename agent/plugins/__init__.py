"""Named series an agent makes itself: [[custom]] commands, [[scrape]] endpoints, [[check]] service checks."""
