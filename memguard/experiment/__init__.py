"""Orchestration of the main job: run each arm through dedup, training and the audit; report; compare runs."""
