"""Store schema as ordered migrations. Each migration runs once, in a transaction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core tables",
        (
            """CREATE TABLE events (
                event_id VARCHAR NOT NULL,
                event_type VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL,
                received_at TIMESTAMP NOT NULL,
                user_id VARCHAR,
                anonymous_id VARCHAR,
                device_id VARCHAR,
                email_token VARCHAR,
                id_key VARCHAR NOT NULL,
                session_id VARCHAR,
                source VARCHAR
            )""",
            "CREATE SEQUENCE quarantine_seq START 1",
            """CREATE TABLE quarantine (
                q_id BIGINT DEFAULT nextval('quarantine_seq') PRIMARY KEY,
                batch_id VARCHAR,
                source VARCHAR,
                row_number BIGINT,
                reason VARCHAR NOT NULL,
                detail VARCHAR,
                record JSON,
                quarantined_at TIMESTAMP NOT NULL,
                status VARCHAR NOT NULL DEFAULT 'open',
                resolved_at TIMESTAMP
            )""",
            """CREATE TABLE import_batches (
                batch_id VARCHAR PRIMARY KEY,
                kind VARCHAR NOT NULL,
                source VARCHAR,
                rows_read BIGINT,
                inserted BIGINT,
                duplicates BIGINT,
                quarantined BIGINT,
                started_at TIMESTAMP,
                finished_at TIMESTAMP,
                mapping JSON
            )""",
            """CREATE TABLE identities (
                id_key VARCHAR PRIMARY KEY,
                id_type VARCHAR NOT NULL,
                id_value VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                first_seen TIMESTAMP,
                last_seen TIMESTAMP,
                linked_by VARCHAR,
                merge_id VARCHAR
            )""",
            """CREATE TABLE identity_edges (
                id_key_a VARCHAR NOT NULL,
                id_key_b VARCHAR NOT NULL,
                source VARCHAR,
                first_seen TIMESTAMP,
                PRIMARY KEY (id_key_a, id_key_b)
            )""",
            """CREATE TABLE identity_merges (
                merge_id VARCHAR PRIMARY KEY,
                winner_profile VARCHAR NOT NULL,
                loser_profile VARCHAR NOT NULL,
                rule VARCHAR NOT NULL,
                score DOUBLE,
                details JSON,
                merged_at TIMESTAMP NOT NULL,
                reverted_at TIMESTAMP,
                moved_keys JSON
            )""",
            """CREATE TABLE profiles (
                profile_id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL,
                merged_into VARCHAR
            )""",
            """CREATE TABLE profile_attributes (
                profile_id VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                value VARCHAR,
                value_num DOUBLE,
                source VARCHAR,
                updated_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, name)
            )""",
            """CREATE TABLE pii_vault (
                profile_id VARCHAR NOT NULL,
                field VARCHAR NOT NULL,
                ciphertext BLOB NOT NULL,
                token VARCHAR,
                updated_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, field)
            )""",
            """CREATE TABLE consents (
                profile_id VARCHAR NOT NULL,
                purpose VARCHAR NOT NULL,
                granted BOOLEAN NOT NULL,
                source VARCHAR,
                recorded_at TIMESTAMP NOT NULL,
                expires_at TIMESTAMP
            )""",
            """CREATE TABLE audit_log (
                logged_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                target VARCHAR,
                details JSON
            )""",
            """CREATE TABLE trait_catalog (
                name VARCHAR PRIMARY KEY,
                kind VARCHAR NOT NULL,
                dtype VARCHAR NOT NULL,
                description VARCHAR,
                computed_at TIMESTAMP,
                as_of TIMESTAMP
            )""",
        ),
    ),
    Migration(
        2,
        "identity resolution: unmerge blocks, refused links, match keys",
        (
            """CREATE TABLE identity_blocks (
                profile_a VARCHAR NOT NULL,
                profile_b VARCHAR NOT NULL,
                merge_id VARCHAR,
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_a, profile_b)
            )""",
            """CREATE TABLE identity_refusals (
                subject_a VARCHAR NOT NULL,
                subject_b VARCHAR NOT NULL,
                rule VARCHAR NOT NULL,
                reason VARCHAR NOT NULL,
                detail VARCHAR,
                first_refused_at TIMESTAMP NOT NULL,
                last_refused_at TIMESTAMP NOT NULL,
                PRIMARY KEY (subject_a, subject_b, reason)
            )""",
            """CREATE TABLE match_keys (
                profile_id VARCHAR NOT NULL,
                field VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                token VARCHAR NOT NULL,
                source VARCHAR,
                updated_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, field, kind)
            )""",
        ),
    ),
    Migration(
        6,
        "experiments: definitions, sticky assignments, exposures",
        (
            """CREATE TABLE IF NOT EXISTS experiments (
                experiment_key VARCHAR PRIMARY KEY,
                definition JSON NOT NULL,
                control VARCHAR,
                planned_per_arm BIGINT,
                status VARCHAR NOT NULL DEFAULT 'draft',
                created_at TIMESTAMP NOT NULL,
                started_at TIMESTAMP,
                stopped_at TIMESTAMP
            )""",
            """CREATE TABLE IF NOT EXISTS experiment_assignments (
                experiment_key VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                variant VARCHAR NOT NULL,
                assigned_at TIMESTAMP NOT NULL,
                PRIMARY KEY (experiment_key, profile_id)
            )""",
            """CREATE TABLE IF NOT EXISTS experiment_exposures (
                experiment_key VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                variant VARCHAR NOT NULL,
                exposed_at TIMESTAMP NOT NULL,
                context VARCHAR
            )""",
        ),
    ),
    Migration(
        4,
        "segments, memberships, membership history, real-time timers",
        (
            """CREATE TABLE IF NOT EXISTS segments (
                name VARCHAR PRIMARY KEY,
                definition JSON NOT NULL,
                checksum VARCHAR NOT NULL,
                source_file VARCHAR,
                realtime JSON,
                min_size INTEGER,
                status VARCHAR NOT NULL DEFAULT 'saved',
                size BIGINT,
                as_of TIMESTAMP,
                computed_at TIMESTAMP,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS memberships (
                segment VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                entered_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS membership_history (
                segment VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                change VARCHAR NOT NULL,
                changed_at TIMESTAMP NOT NULL,
                reason VARCHAR,
                source VARCHAR NOT NULL,
                recorded_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS segment_timers (
                profile_id VARCHAR PRIMARY KEY,
                due_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "model registry, scores, cluster membership",
        (
            """CREATE TABLE IF NOT EXISTS model_registry (
                model VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                kind VARCHAR NOT NULL,
                target VARCHAR,
                features JSON,
                params JSON,
                metrics JSON,
                artifact BLOB,
                trained_at TIMESTAMP NOT NULL,
                as_of TIMESTAMP,
                status VARCHAR NOT NULL DEFAULT 'active',
                PRIMARY KEY (model, version)
            )""",
            """CREATE TABLE IF NOT EXISTS scores (
                profile_id VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                score DOUBLE,
                scored_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, model, version)
            )""",
            """CREATE TABLE IF NOT EXISTS cluster_membership (
                profile_id VARCHAR NOT NULL,
                run VARCHAR NOT NULL,
                cluster INTEGER NOT NULL,
                persona VARCHAR,
                assigned_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, run)
            )""",
        ),
    ),
    Migration(
        7,
        "content versions, sends ledger, journey state, timers",
        (
            """CREATE TABLE content_versions (
                block VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                checksum VARCHAR NOT NULL,
                definition JSON NOT NULL,
                tags JSON,
                source_file VARCHAR,
                created_at TIMESTAMP NOT NULL,
                created_by VARCHAR,
                PRIMARY KEY (block, version)
            )""",
            """CREATE TABLE sends (
                send_key VARCHAR PRIMARY KEY,
                profile_id VARCHAR,
                channel VARCHAR NOT NULL,
                purpose VARCHAR,
                block VARCHAR,
                block_version INTEGER,
                recipient_token VARCHAR,
                status VARCHAR NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error VARCHAR,
                provider_id VARCHAR,
                payload JSON,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL,
                next_attempt_at TIMESTAMP,
                lease_until TIMESTAMP,
                sent_at TIMESTAMP
            )""",
            "CREATE INDEX sends_profile_idx ON sends (profile_id, sent_at)",
            "CREATE INDEX sends_status_idx ON sends (status, next_attempt_at)",
            """CREATE TABLE journey_state (
                profile_id VARCHAR NOT NULL,
                journey VARCHAR NOT NULL,
                step VARCHAR,
                status VARCHAR NOT NULL,
                entered_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL,
                data JSON,
                PRIMARY KEY (profile_id, journey)
            )""",
            """CREATE TABLE timers (
                timer_id VARCHAR PRIMARY KEY,
                profile_id VARCHAR,
                journey VARCHAR,
                step VARCHAR,
                due_at TIMESTAMP NOT NULL,
                fired_at TIMESTAMP,
                payload JSON
            )""",
            "CREATE INDEX timers_due_idx ON timers (fired_at, due_at)",
        ),
    ),
    Migration(
        9,
        "data-quality outlier flags",
        (
            """CREATE TABLE IF NOT EXISTS quality_outliers (
                profile_id VARCHAR NOT NULL,
                metric VARCHAR NOT NULL,
                value DOUBLE,
                z DOUBLE,
                sigma DOUBLE NOT NULL,
                flagged_at TIMESTAMP NOT NULL,
                PRIMARY KEY (profile_id, metric)
            )""",
        ),
    ),
    Migration(
        5,
        "api keys, collector spool ledger",
        (
            """CREATE TABLE IF NOT EXISTS api_keys (
                key_id VARCHAR PRIMARY KEY,
                name VARCHAR,
                role VARCHAR NOT NULL,
                key_hash VARCHAR NOT NULL,
                rate_per_second DOUBLE,
                created_at TIMESTAMP NOT NULL,
                created_by VARCHAR,
                revoked_at TIMESTAMP
            )""",
            """CREATE TABLE IF NOT EXISTS spool_commits (
                segment VARCHAR PRIMARY KEY,
                batch_id VARCHAR,
                lines BIGINT NOT NULL,
                inserted BIGINT,
                duplicates BIGINT,
                quarantined BIGINT,
                committed_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
    Migration(
        10,
        "journeys: enrolments, waits, sweep watermarks, trigger matches, journey log, timer kinds",
        (
            "ALTER TABLE journey_state ADD COLUMN enrolment INTEGER DEFAULT 0",
            "ALTER TABLE journey_state ADD COLUMN occurrence VARCHAR",
            "ALTER TABLE journey_state ADD COLUMN visit INTEGER DEFAULT 0",
            "ALTER TABLE journey_state ADD COLUMN wait_since TIMESTAMP",
            "ALTER TABLE journey_state ADD COLUMN wait_until TIMESTAMP",
            "ALTER TABLE timers ADD COLUMN kind VARCHAR",
            "ALTER TABLE timers ADD COLUMN enrolment INTEGER",
            "ALTER TABLE timers ADD COLUMN outcome VARCHAR",
            """CREATE TABLE IF NOT EXISTS journey_sweeps (
                journey VARCHAR PRIMARY KEY,
                last_sweep_at TIMESTAMP NOT NULL,
                enrolled BIGINT,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS journey_matches (
                journey VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                since TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS journey_log (
                journey VARCHAR NOT NULL,
                profile_id VARCHAR NOT NULL,
                enrolment INTEGER,
                step VARCHAR,
                action VARCHAR NOT NULL,
                logged_at TIMESTAMP NOT NULL,
                detail VARCHAR
            )""",
        ),
    ),
    Migration(
        12,
        "privacy: per-profile data keys, erasure markers, current consent view",
        (
            """CREATE TABLE IF NOT EXISTS subject_keys (
                profile_id VARCHAR PRIMARY KEY,
                wrapped_key BLOB NOT NULL,
                master_key_id VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS erasure_markers (
                marker VARCHAR PRIMARY KEY,
                erasure_id VARCHAR NOT NULL,
                erased_at TIMESTAMP NOT NULL
            )""",
            """CREATE OR REPLACE VIEW consent_current AS
            SELECT profile_id, purpose, granted, source, recorded_at, expires_at FROM consents
            QUALIFY row_number() OVER (
                PARTITION BY profile_id, purpose ORDER BY recorded_at DESC, granted ASC) = 1""",
        ),
    ),
    Migration(
        13,
        "decision impressions (frequency caps of decision rules survive restarts)",
        (
            """CREATE TABLE IF NOT EXISTS decision_impressions (
                profile_id VARCHAR NOT NULL,
                cap_key VARCHAR NOT NULL,
                served_at TIMESTAMP NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS decision_impressions_at_idx"
            " ON decision_impressions (served_at)",
        ),
    ),
    Migration(
        11,
        "campaign status (guard rules pause / throttle campaigns) and guard action log",
        (
            """CREATE TABLE IF NOT EXISTS campaigns (
                campaign VARCHAR PRIMARY KEY,
                status VARCHAR NOT NULL DEFAULT 'active',
                share DOUBLE NOT NULL DEFAULT 1.0,
                reason VARCHAR,
                changed_at TIMESTAMP NOT NULL,
                changed_by VARCHAR
            )""",
            """CREATE TABLE IF NOT EXISTS campaign_actions (
                campaign VARCHAR NOT NULL,
                rule VARCHAR NOT NULL,
                period TIMESTAMP NOT NULL,
                action VARCHAR NOT NULL,
                result VARCHAR NOT NULL,
                details JSON,
                applied_at TIMESTAMP NOT NULL,
                applied_by VARCHAR,
                PRIMARY KEY (campaign, rule, period)
            )""",
        ),
    ),
    Migration(
        14,
        "event-id index state: the store's id and the generation its SQLite index must reach",
        (
            """CREATE TABLE IF NOT EXISTS event_id_index (
                store_id VARCHAR NOT NULL,
                generation BIGINT NOT NULL
            )""",
            "INSERT INTO event_id_index SELECT CAST(uuid() AS VARCHAR), 0",
        ),
    ),
    Migration(
        15,
        "session heads: each id key's latest computed session (name, start, last event time)",
        (
            """CREATE TABLE IF NOT EXISTS session_heads (
                id_key VARCHAR NOT NULL,
                session_id VARCHAR NOT NULL,
                start_ts TIMESTAMP NOT NULL,
                last_ts TIMESTAMP NOT NULL
            )""",
            """INSERT INTO session_heads
            WITH latest AS (
                SELECT id_key, arg_max(session_id, ts) AS session_id, max(ts) AS last_ts
                FROM events WHERE starts_with(session_id, 'ms-') GROUP BY id_key
            )
            SELECT l.id_key, l.session_id, min(e.ts), l.last_ts
            FROM latest l JOIN events e ON e.id_key = l.id_key AND e.session_id = l.session_id
            GROUP BY l.id_key, l.session_id, l.last_ts""",
        ),
    ),
)


def latest_version() -> int:
    return max(m.version for m in MIGRATIONS)
