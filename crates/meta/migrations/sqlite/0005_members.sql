-- Project members: a user (`user:<name>`) or a group (`group:<name>`) with a role in a project.
-- The role is stored by its name; berth-access decides what it allows. A project's members go
-- with it. `memberships` looks a person up by every member key they hold (their user and their
-- groups): the index on `member` serves it.

CREATE TABLE project_members (
    project    TEXT NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project, member)
);

CREATE INDEX project_members_by_member ON project_members (member);
