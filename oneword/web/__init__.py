"""The gallery web app of `oneword serve`."""
