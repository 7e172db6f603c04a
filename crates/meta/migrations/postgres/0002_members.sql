-- Project members: a user (`user:<name>`) or a group (`group:<name>`) with a role in a project.
-- The role is stored by its name; berth-access decides what it allows. A project's members go
-- with it. `memberships` looks a person up by every member key they hold (their user and their
-- groups): the index on `member` serves it. Keys compare bytewise ("C") as everywhere here.

CREATE TABLE project_members (
    project    TEXT COLLATE "C" NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    member     TEXT COLLATE "C" NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project, member)
);

CREATE INDEX project_members_by_member ON project_members (member);
