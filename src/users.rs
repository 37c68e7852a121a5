//! Shoppers: the dictionary of external user ids and their dense `UserId`s, in memory and in
//! the store, and the staging of a commit's new and forgotten users.
//!
//! Ids are kept in their stored form: the id itself, or its pseudonym when the database was
//! created with a user key (`pseudonym`). Every lookup by an application's id goes through
//! [`UserTable::stored`], every id shown through [`UserTable::external`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::events::UserId;
use crate::pseudonym::Pseudonyms;
use crate::store::{be_u32, key, Batch, Store};

/// Store prefix: user id -> uid `u32`.
pub(crate) const USER: u8 = b'U';
/// Store prefix: uid `u32` -> user id.
pub(crate) const USER_ID: u8 = b'V';

/// The committed users, by stored form.
#[derive(Default)]
pub(crate) struct UserTable {
    ids: HashMap<String, UserId>,
    names: Vec<Option<String>>,
    /// Set when ids are stored as pseudonyms.
    pseudonyms: Option<Arc<Pseudonyms>>,
}

impl UserTable {
    /// The form of an application's user id that the store keeps.
    pub fn stored<'a>(&self, name: &'a str) -> Cow<'a, str> {
        match &self.pseudonyms {
            Some(p) => Cow::Owned(p.of(name)),
            None => Cow::Borrowed(name),
        }
    }

    /// The uid of an application's user id.
    pub fn get(&self, name: &str) -> Option<UserId> {
        let stored = self.stored(name);
        let uid = self.ids.get(stored.as_ref()).copied();
        if let (Some(p), Some(_)) = (&self.pseudonyms, uid) {
            p.remember(&stored, name);
        }
        uid
    }

    /// The id to show for a uid (see [`Pseudonyms::display`]).
    pub fn external(&self, uid: UserId) -> Option<String> {
        let stored = self.names.get(uid.0 as usize)?.as_deref()?;
        Some(match &self.pseudonyms {
            Some(p) => p.display(stored),
            None => stored.to_string(),
        })
    }

    /// Number of uids handed out (forgotten ones included).
    pub fn uid_count(&self) -> usize {
        self.names.len()
    }

    /// Number of known users.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn insert(&mut self, name: String, uid: UserId) {
        let i = uid.0 as usize;
        if self.names.len() <= i {
            self.names.resize(i + 1, None);
        }
        self.names[i] = Some(name.clone());
        self.ids.insert(name, uid);
    }

    /// Publishes a durable commit's user changes.
    pub fn apply(&mut self, changes: UserChanges) {
        for uid in &changes.forgotten {
            if let Some(slot) = self.names.get_mut(uid.0 as usize) {
                if let Some(name) = slot.take() {
                    self.ids.remove(&name);
                    if let Some(p) = &self.pseudonyms {
                        p.forget(&name);
                    }
                }
            }
        }
        for (name, uid) in changes.new_users {
            self.insert(name, uid);
        }
    }
}

/// The committed users, read at open; `pseudonyms` when ids are stored as pseudonyms.
pub(crate) fn load(store: &Store, pseudonyms: Option<Arc<Pseudonyms>>) -> Result<UserTable> {
    let mut users = UserTable {
        pseudonyms,
        ..UserTable::default()
    };
    for r in store.scan(&[USER]) {
        let (k, v) = r?;
        if let Some(uid) = be_u32(&v, 0) {
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            users.insert(name, UserId(uid));
        }
    }
    Ok(users)
}

/// What a durable commit changes in the user table.
#[derive(Default)]
pub(crate) struct UserChanges {
    new_users: HashMap<String, UserId>,
    /// Users whose every trace this commit removes.
    pub forgotten: Vec<UserId>,
}

impl UserChanges {
    /// Whether the commit adds or forgets no user.
    pub fn is_empty(&self) -> bool {
        self.new_users.is_empty() && self.forgotten.is_empty()
    }
}

/// One commit's user writes, staged beside the committed table.
pub(crate) struct UserDraft<'a> {
    users: &'a UserTable,
    next_user: u32,
    changes: UserChanges,
}

impl<'a> UserDraft<'a> {
    pub fn new(users: &'a UserTable) -> Self {
        UserDraft {
            users,
            next_user: users.names.len() as u32,
            changes: UserChanges::default(),
        }
    }

    /// The uid of a user, allocating one (and staging its records) for a new user or one
    /// forgotten earlier in this commit.
    pub fn uid(&mut self, name: &str, batch: &mut Batch) -> UserId {
        let known = self.users.get(name).or_else(|| {
            let stored = self.users.stored(name);
            self.changes.new_users.get(stored.as_ref()).copied()
        });
        match known {
            Some(u) if !self.changes.forgotten.contains(&u) => u,
            _ => {
                let uid = UserId(self.next_user);
                self.next_user += 1;
                let stored = self.users.stored(name);
                if let Some(p) = &self.users.pseudonyms {
                    p.remember(&stored, name);
                }
                let name = stored.as_ref();
                self.changes.new_users.insert(name.to_string(), uid);
                batch.put(key(USER, &[name.as_bytes()]), uid.0.to_be_bytes().to_vec());
                batch.put(
                    key(USER_ID, &[&uid.0.to_be_bytes()]),
                    name.as_bytes().to_vec(),
                );
                uid
            }
        }
    }

    /// Stages the removal of a user's id records; returns the uids that leave (the
    /// committed one and one created earlier in this commit, when either exists).
    pub fn forget(&mut self, name: &str, batch: &mut Batch) -> Vec<UserId> {
        let mut gone = Vec::new();
        if let Some(uid) = self.users.get(name) {
            gone.push(uid);
        }
        let stored = self.users.stored(name);
        let name = stored.as_ref();
        if let Some(uid) = self.changes.new_users.remove(name) {
            gone.push(uid);
        }
        for uid in &gone {
            batch.remove(key(USER_ID, &[&uid.0.to_be_bytes()]));
            self.changes.forgotten.push(*uid);
        }
        batch.remove(key(USER, &[name.as_bytes()]));
        gone
    }

    /// The changes to publish once the commit is durable.
    pub fn into_changes(self) -> UserChanges {
        self.changes
    }
}
