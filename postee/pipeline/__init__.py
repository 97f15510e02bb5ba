"""The event pipeline: intake → router → one route actor per route → one action actor per action."""
