//! Projects: the first component of repository names.

use berth_meta::{DeleteOutcome, ProjectRecord};

use super::rfc3339;
use super::types::{ProjectSpec, ProjectView};
use crate::clock::now_secs;
use crate::{Core, Error, Result};

fn project_view(p: &ProjectRecord) -> ProjectView {
    ProjectView { name: p.name.clone(), public: p.public, created_at: rfc3339(p.created_at) }
}

impl Core {
    /// All projects, by name.
    pub async fn list_projects(&self) -> Result<Vec<ProjectView>> {
        Ok(self.meta.list_projects().await?.iter().map(project_view).collect())
    }

    /// Creates a project; `Conflict` if it exists.
    pub async fn create_project(&self, spec: &ProjectSpec) -> Result<ProjectView> {
        berth_access::validate_project_name(&spec.name).map_err(Error::Invalid)?;
        let rec = ProjectRecord { name: spec.name.clone(), public: spec.public, created_at: now_secs() };
        if !self.meta.create_project(&rec).await? {
            return Err(Error::Conflict(format!("project {:?} already exists", spec.name)));
        }
        self.changed().await;
        Ok(project_view(&rec))
    }

    pub async fn get_project(&self, name: &str) -> Result<ProjectView> {
        let p = self.meta.get_project(name).await?.ok_or_else(|| Error::not_found("project", name))?;
        Ok(project_view(&p))
    }

    /// Creates or updates the project `name` (`spec.name` must be `name`).
    pub async fn put_project(&self, name: &str, spec: &ProjectSpec) -> Result<ProjectView> {
        if spec.name != name {
            return Err(Error::Invalid(format!("the body names project {:?} but the URL {name:?}", spec.name)));
        }
        berth_access::validate_project_name(name).map_err(Error::Invalid)?;
        self.meta.put_project(&ProjectRecord { name: name.to_owned(), public: spec.public, created_at: now_secs() }).await?;
        self.changed().await;
        self.get_project(name).await
    }

    /// Deletes a project; `Conflict` while robots belong to it.
    pub async fn delete_project(&self, name: &str) -> Result<()> {
        match self.meta.delete_project(name).await? {
            DeleteOutcome::Deleted => {
                self.changed().await;
                Ok(())
            }
            DeleteOutcome::NotFound => Err(Error::not_found("project", name)),
            DeleteOutcome::InUse(why) => Err(Error::Conflict(why)),
        }
    }
}
