"""Durable named queues and topics (iii-reference §3 Queues), kept in Redis."""

from .config import DEFAULT_QUEUE, QueueConfig, topic_queue_name
from .store import Job, JobStore, parse_job, with_attempt

__all__ = ["DEFAULT_QUEUE", "Job", "JobStore", "QueueConfig", "parse_job", "topic_queue_name",
           "with_attempt"]
