"""One figure style, figures that take results and return matplotlib objects, and one
explorer builder for the chapters' "Explore" sections (no computation starts here)."""
