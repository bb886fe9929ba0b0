//! The HTTP API suite, run against SQLite and against PostgreSQL.

mod common;

use std::time::Duration;

use common::relay_client::RelayClient;
use common::{MemberStream, TestServer};
use jam_control_plane::auth;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    accounts_and_tokens,
    expired_forged_and_malformed_tokens_are_refused,
    bad_input_gets_clear_4xx_errors,
    devices_hold_public_keys,
    sessions_discovery_join_and_leave,
    private_password_and_invite_only_sessions,
    blob_store_serves_exact_bytes_by_the_sharing_rules,
    metrics_and_dashboard_snapshot,
    member_streams_wake_on_changes_in_their_own_session_only,
);

async fn accounts_and_tokens(ts: &TestServer) {
    let (s, v) = ts
        .call(
            Method::POST,
            "/api/accounts",
            None,
            Some(json!({"username": "ana", "password": "long enough"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["username"], "ana");
    assert_eq!(v["is_admin"], false);
    let (s, v) = ts
        .call(
            Method::POST,
            "/api/accounts",
            None,
            Some(json!({"username": "ana", "password": "other password"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "conflict");
    let (s, _) = ts
        .call(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": "ana", "password": "wrong password"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = ts
        .call(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": "nobody", "password": "long enough"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = ts
        .call(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": "ana", "password": "long enough"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let token = v["token"].as_str().unwrap().to_string();
    assert!(v["expires_at"].as_i64().unwrap() > jam_control_plane::db::now_ms());
    let (s, me) = ts.call(Method::GET, "/api/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["username"], "ana");
    // The database holds the token's hash, never the token.
    let stored = ts
        .server()
        .state
        .db
        .user_for_token(&auth::secret_hash(&token), jam_control_plane::db::now_ms())
        .await
        .unwrap();
    assert_eq!(stored.unwrap().username, "ana");
    assert!(
        ts.server()
            .state
            .db
            .user_for_token(&token, 0)
            .await
            .unwrap()
            .is_none()
    );
    // Logout ends the token.
    let (s, _) = ts
        .call(Method::POST, "/api/logout", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts.call(Method::GET, "/api/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn expired_forged_and_malformed_tokens_are_refused(ts: &TestServer) {
    let token = ts.user("bob").await;
    let (_, me) = ts.call(Method::GET, "/api/me", Some(&token), None).await;
    // An expired token: stored exactly like a real one, with a past expiry.
    let expired = auth::new_token();
    ts.server()
        .state
        .db
        .insert_token(
            &auth::secret_hash(&expired),
            me["id"].as_str().unwrap(),
            jam_control_plane::db::now_ms() - 1,
        )
        .await
        .unwrap();
    let forged = auth::new_token();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for (what, t) in [
        ("expired", expired.as_str()),
        ("forged", forged.as_str()),
        ("tampered", tampered.as_str()),
        ("malformed", "jt_not-hex"),
        ("sql", "' OR '1'='1"),
        ("empty", ""),
    ] {
        let (s, v) = ts.call(Method::GET, "/api/me", Some(t), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} token: {v}");
        assert_eq!(v["error"], "unauthorized", "{what}");
    }
    let (s, _) = ts.call(Method::GET, "/api/me", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The real one still works.
    let (s, _) = ts.call(Method::GET, "/api/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
}

async fn bad_input_gets_clear_4xx_errors(ts: &TestServer) {
    let token = ts.user("carla").await;
    // Malformed JSON.
    let (s, v) = ts
        .raw(
            Method::POST,
            "/api/sessions",
            Some(&token),
            "application/json",
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "bad_request");
    assert!(v["message"].as_str().unwrap().contains("EOF"), "{v}");
    // Wrong type, missing field, unknown field, wrong content type.
    for body in [
        json!({"name": 5}),
        json!({}),
        json!({"name": "x", "colour": "red"}),
    ] {
        let (s, v) = ts
            .call(Method::POST, "/api/sessions", Some(&token), Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let (s, v) = ts
        .raw(
            Method::POST,
            "/api/sessions",
            Some(&token),
            "text/plain",
            b"{\"name\":\"x\"}".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Too large a body.
    let huge = json!({"name": "x".repeat(100_000)});
    let (s, v) = ts
        .call(Method::POST, "/api/sessions", Some(&token), Some(huge))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Semantically invalid fields: 422 with a message naming the field.
    for (path, body, field) in [
        (
            "/api/accounts",
            json!({"username": "A B", "password": "long enough"}),
            "username",
        ),
        (
            "/api/accounts",
            json!({"username": "x'; DROP TABLE users;--", "password": "long enough"}),
            "username",
        ),
        (
            "/api/accounts",
            json!({"username": "dora", "password": "short"}),
            "password",
        ),
        ("/api/sessions", json!({"name": ""}), "name"),
        ("/api/sessions", json!({"name": "a\u{0}b"}), "name"),
        ("/api/sessions", json!({"name": "y".repeat(65)}), "name"),
        (
            "/api/devices",
            json!({"name": "laptop", "public_key": "zz"}),
            "public_key",
        ),
    ] {
        let (s, v) = ts.call(Method::POST, path, Some(&token), Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {v}");
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    // SQL metacharacters in a valid name are stored and returned verbatim.
    let name = "Robert'); DROP TABLE sessions;-- \"jam\"";
    let (s, v) = ts
        .call(
            Method::POST,
            "/api/sessions",
            Some(&token),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], name);
    let (s, list) = ts.call(Method::GET, "/api/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (s, v) = ts
        .call(
            Method::GET,
            &format!("/api/sessions/by-name/{encoded}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], name);
    // Ids that cannot exist are 404, whatever they contain.
    for id in ["1' OR '1'='1", "ffffffffffffffff", "FFFFFFFFFFFFFFFF", "12"] {
        let (s, _) = ts
            .call(
                Method::GET,
                &format!("/api/sessions/{}", id.replace(' ', "%20")),
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}");
    }
    let (s, v) = ts.call(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "not_found");
}

async fn devices_hold_public_keys(ts: &TestServer) {
    let a = ts.user("eve").await;
    let b = ts.user("finn").await;
    let key = "ab".repeat(32);
    let (s, d) = ts
        .call(
            Method::POST,
            "/api/devices",
            Some(&a),
            Some(json!({"name": "laptop", "public_key": key})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, _) = ts
        .call(
            Method::POST,
            "/api/devices",
            Some(&a),
            Some(json!({"name": "again", "public_key": key.to_uppercase()})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = ts
        .call(
            Method::POST,
            "/api/devices",
            Some(&a),
            Some(json!({"name": "zero", "public_key": "00".repeat(32)})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Another user can fetch eve's public keys (to seal files to her).
    let (s, v) = ts
        .call(Method::GET, "/api/users/eve/devices", Some(&b), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["public_key"], key);
    let (s, _) = ts
        .call(Method::GET, "/api/users/eve/devices", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Only the owner deletes.
    let id = d["id"].as_str().unwrap();
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/devices/{id}"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/devices/{id}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = ts.call(Method::GET, "/api/devices", Some(&a), None).await;
    assert_eq!(v.as_array().unwrap().len(), 0);
}

async fn sessions_discovery_join_and_leave(ts: &TestServer) {
    let owner = ts.user("gil").await;
    let guest = ts.user("hana").await;
    let stranger = ts.user("ivo").await;
    let key = "cd".repeat(32);
    ts.call(
        Method::POST,
        "/api/devices",
        Some(&guest),
        Some(json!({"name": "pc", "public_key": key})),
    )
    .await;
    let id = ts.session(&owner, "open jam").await;
    let (s, _) = ts
        .call(
            Method::POST,
            "/api/sessions",
            Some(&guest),
            Some(json!({"name": "open jam"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, list) = ts.call(Method::GET, "/api/sessions", None, None).await;
    assert_eq!(list[0]["name"], "open jam");
    assert_eq!(list[0]["members"], 0);
    let j1 = ts.join(&owner, &id).await;
    let j2 = ts.join(&guest, &id).await;
    assert_ne!(j1["member_id"], j2["member_id"]);
    assert_eq!(j2["members"].as_array().unwrap().len(), 2);
    let me = j2["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == "hana")
        .unwrap();
    assert_eq!(me["public_key"], key);
    let relay = ts.server().relay_addr;
    assert_eq!(j2["relay"], format!("127.0.0.1:{}", relay.port()));
    assert!(j2["server_time_ms"].as_i64().unwrap() > 0);
    // The ticket is genuine: it verifies under the server's secret.
    let ticket = jam_transport::relay::Ticket::from_hex(j2["ticket"].as_str().unwrap()).unwrap();
    let hello_key = ticket.verify(&ts.server().state.secret, 0).unwrap();
    assert_eq!(hello_key.to_hex(), j2["hello_key"]);
    assert_eq!(i64::from(ticket.member), j2["member_id"].as_i64().unwrap());
    // Joining again gives the same member id.
    let again = ts.join(&guest, &id).await;
    assert_eq!(again["member_id"], j2["member_id"]);
    // Members are visible to members only.
    let (s, v) = ts
        .call(
            Method::GET,
            &format!("/api/sessions/{id}/members"),
            Some(&guest),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (s, _) = ts
        .call(
            Method::GET,
            &format!("/api/sessions/{id}/members"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Leave, and leaving again is refused.
    let (s, _) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{id}/leave"),
            Some(&guest),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{id}/leave"),
            Some(&guest),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = ts
        .call(Method::GET, &format!("/api/sessions/{id}"), None, None)
        .await;
    assert_eq!(v["members"], 1);
    // Only the owner deletes.
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/sessions/{id}"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/sessions/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts
        .call(Method::GET, &format!("/api/sessions/{id}"), None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{id}/join"),
            Some(&guest),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn private_password_and_invite_only_sessions(ts: &TestServer) {
    let owner = ts.user("joe").await;
    let friend = ts.user("kim").await;
    let other = ts.user("lee").await;
    let (s, p) = ts
        .call(
            Method::POST,
            "/api/sessions",
            Some(&owner),
            Some(json!({"name": "secret", "public": false, "password": "pw"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(p["has_password"], true);
    let pid = p["id"].as_str().unwrap();
    // Not listed for others; listed for the owner.
    let (_, list) = ts
        .call(Method::GET, "/api/sessions", Some(&other), None)
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "secret")
    );
    let (_, list) = ts
        .call(Method::GET, "/api/sessions", Some(&owner), None)
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "secret")
    );
    let (s, _) = ts
        .call(
            Method::GET,
            &format!("/api/sessions/{pid}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let join = format!("/api/sessions/{pid}/join");
    let (s, _) = ts
        .call(Method::POST, &join, Some(&friend), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = ts
        .call(
            Method::POST,
            &join,
            Some(&friend),
            Some(json!({"password": "wrong"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = ts
        .call(
            Method::POST,
            &join,
            Some(&friend),
            Some(json!({"password": "pw"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Invite-only.
    let (_, inv) = ts
        .call(
            Method::POST,
            "/api/sessions",
            Some(&owner),
            Some(json!({"name": "band only", "invite_only": true})),
        )
        .await;
    let iid = inv["id"].as_str().unwrap();
    let join = format!("/api/sessions/{iid}/join");
    let (s, v) = ts
        .call(Method::POST, &join, Some(&friend), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let invite = format!("/api/sessions/{iid}/invites");
    let (s, _) = ts
        .call(
            Method::POST,
            &invite,
            Some(&other),
            Some(json!({"username": "kim"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = ts
        .call(
            Method::POST,
            &invite,
            Some(&owner),
            Some(json!({"username": "nobody"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ts
        .call(
            Method::POST,
            &invite,
            Some(&owner),
            Some(json!({"username": "kim"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts
        .call(Method::POST, &join, Some(&friend), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = ts
        .call(Method::POST, &join, Some(&other), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn blob_store_serves_exact_bytes_by_the_sharing_rules(ts: &TestServer) {
    let owner = ts.user("mia").await;
    let bob = ts.user("ned").await;
    let carol = ts.user("ola").await;
    // "Sealed" bytes: the server must store them exactly, whatever they are.
    let v1: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (s, up) = ts
        .raw(
            Method::POST,
            "/api/blobs?name=groove.agent&kind=agent",
            Some(&owner),
            "application/octet-stream",
            v1.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(up["version"]["version"], 1);
    let sha = up["version"]["sha256"].as_str().unwrap();
    let on_disk = std::fs::read(common::data_path(ts, &format!("blobs/{sha}"))).unwrap();
    assert_eq!(on_disk, v1, "the stored file is byte-for-byte the upload");
    let (s, got) = ts.get_bytes(&format!("/api/blobs/{id}"), &owner).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, v1);
    // Not shared: invisible.
    let (s, _) = ts.get_bytes(&format!("/api/blobs/{id}"), &bob).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ts
        .call(
            Method::PUT,
            &format!("/api/blobs/{id}/shares/ned"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "only the owner shares");
    // Share with bob and carol from version 1.
    for who in ["ned", "ola"] {
        let (s, _) = ts
            .call(
                Method::PUT,
                &format!("/api/blobs/{id}/shares/{who}"),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    let (s, got) = ts
        .get_bytes(&format!("/api/blobs/{id}/versions/1"), &bob)
        .await;
    assert_eq!((s, got == v1), (StatusCode::OK, true));
    let (_, list) = ts.call(Method::GET, "/api/blobs", Some(&bob), None).await;
    assert_eq!(list[0]["owner"], "mia");
    assert_eq!(list[0]["versions"].as_array().unwrap().len(), 1);
    // Revoke bob: from now on no version is served to him.
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/blobs/{id}/shares/ned"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts
        .get_bytes(&format!("/api/blobs/{id}/versions/1"), &bob)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The owner re-seals without bob and uploads version 2.
    let v2 = b"sealed again, to mia and ola only".to_vec();
    let (s, up2) = ts
        .raw(
            Method::POST,
            &format!("/api/blobs/{id}/versions"),
            Some(&owner),
            "application/octet-stream",
            v2.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{up2}");
    assert_eq!(up2["version"]["version"], 2);
    for path in [
        format!("/api/blobs/{id}"),
        format!("/api/blobs/{id}/versions/1"),
        format!("/api/blobs/{id}/versions/2"),
    ] {
        let (s, _) = ts.get_bytes(&path, &bob).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "revoked account reads {path}");
    }
    let (_, list) = ts.call(Method::GET, "/api/blobs", Some(&bob), None).await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    // Carol still gets the newest version.
    let (s, got) = ts.get_bytes(&format!("/api/blobs/{id}"), &carol).await;
    assert_eq!((s, got), (StatusCode::OK, v2.clone()));
    // Sharing with bob again starts at the newest version: never version 1.
    ts.call(
        Method::PUT,
        &format!("/api/blobs/{id}/shares/ned"),
        Some(&owner),
        None,
    )
    .await;
    let (s, _) = ts
        .get_bytes(&format!("/api/blobs/{id}/versions/1"), &bob)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, got) = ts.get_bytes(&format!("/api/blobs/{id}"), &bob).await;
    assert_eq!((s, got), (StatusCode::OK, v2));
    let (_, shares) = ts
        .call(
            Method::GET,
            &format!("/api/blobs/{id}/shares"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        shares,
        json!([{"username": "ned", "from_version": 2}, {"username": "ola", "from_version": 1}])
    );
    // Limits and validation.
    let (s, _) = ts
        .raw(
            Method::POST,
            "/api/blobs?name=e.scp&kind=scp",
            Some(&owner),
            "application/octet-stream",
            Vec::new(),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = ts
        .raw(
            Method::POST,
            "/api/blobs?name=e.exe&kind=exe",
            Some(&owner),
            "application/octet-stream",
            vec![1],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = ts
        .raw(
            Method::POST,
            "/api/blobs",
            Some(&owner),
            "application/octet-stream",
            vec![1],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let too_big = vec![0u8; ts.server().state.config.max_blob_bytes as usize + 1];
    let (s, _) = ts
        .raw(
            Method::POST,
            "/api/blobs?name=big.scp&kind=scp",
            Some(&owner),
            "application/octet-stream",
            too_big,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let tmp = std::fs::read_dir(common::data_path(ts, "blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "a refused upload leaves no temporary file");
    // Delete: gone for everyone, file removed.
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/blobs/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/blobs/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts.get_bytes(&format!("/api/blobs/{id}"), &owner).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!common::data_path(ts, &format!("blobs/{sha}")).exists());
}

async fn metrics_and_dashboard_snapshot(ts: &TestServer) {
    let t = ts.user("pia").await;
    ts.session(&t, "visible").await;
    let (_, _) = ts
        .call(
            Method::POST,
            "/api/sessions",
            Some(&t),
            Some(json!({"name": "hidden", "public": false})),
        )
        .await;
    let m = ts.metrics().await;
    assert!(
        m.contains("# TYPE jamd_relay_packets_in_total counter"),
        "{m}"
    );
    assert!(
        m.contains("jamd_relay_dropped_total{reason=\"unknown_source\"} 0"),
        "{m}"
    );
    assert!(ts.metric("jamd_http_responses_total{class=\"2xx\"}").await >= 3);
    // The public snapshot lists public sessions and counts the others.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, snap) = ts.call(Method::GET, "/api/dashboard", None, None).await;
        if snap["sessions"].as_array().is_some_and(|s| s.len() == 1) && snap["hidden_sessions"] == 1
        {
            assert_eq!(snap["sessions"][0]["name"], "visible");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard never showed the sessions: {snap}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let page = ts
        .http
        .get(format!("{}/", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<script src=\"/dashboard.js\">"));
}

fn usernames(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|m| m["username"].as_str().expect("username"))
        .collect()
}

/// A change in one session wakes only that session's member streams: a
/// stream on A stays silent and re-reads nothing while B gains and loses
/// members (and a third session comes and goes), then carries A's own
/// changes, one event each, and `jamd_member_stream_renders_total` grows
/// by A's reads only.
async fn member_streams_wake_on_changes_in_their_own_session_only(ts: &TestServer) {
    const RENDERS: &str = "jamd_member_stream_renders_total";
    let olga = ts.user("olga").await;
    let a = ts.session(&olga, "room-a").await;
    let b = ts.session(&olga, "room-b").await;
    ts.join(&olga, &a).await;
    let before = ts.metric(RENDERS).await;
    let mut stream = MemberStream::open(ts, &olga, &a).await;
    let first = stream.next("the list at once").await;
    assert_eq!(usernames(&first), ["olga"], "{first}");

    // In B: three joins, a member coming online on the relay, a leave; a
    // session C created and deleted.
    let mut joined = Vec::new();
    for name in ["bea", "bob", "bim"] {
        let t = ts.user(name).await;
        let j = ts.join(&t, &b).await;
        joined.push((t, j));
    }
    let mut bea = RelayClient::from_join(&joined[0].1);
    tokio::task::block_in_place(|| bea.hello()).expect("bea's hello accepted");
    let (s, v) = ts
        .call(
            Method::POST,
            &format!("/api/sessions/{b}/leave"),
            Some(&joined[1].0),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let c = ts.session(&olga, "room-c").await;
    let (s, v) = ts
        .call(
            Method::DELETE,
            &format!("/api/sessions/{c}"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // Time for a stream those changes woke to have read its list: this one
    // was not woken, so it read nothing and sends nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.read()).await;
    assert!(quiet.is_err(), "A's stream after B's changes: {quiet:?}");
    assert_eq!(
        ts.metric(RENDERS).await,
        before + 1,
        "reads after B's changes"
    );

    // In A: a join, then the newcomer online on the relay.
    let ada = ts.user("ada").await;
    let ada_join = ts.join(&ada, &a).await;
    let second = stream.next("ada's join").await;
    assert_eq!(usernames(&second), ["olga", "ada"], "{second}");
    assert_eq!(second[1]["online"], false, "{second}");
    let mut ada_relay = RelayClient::from_join(&ada_join);
    tokio::task::block_in_place(|| ada_relay.hello()).expect("ada's hello accepted");
    let third = stream.next("ada online").await;
    assert_eq!(usernames(&third), ["olga", "ada"], "{third}");
    assert_eq!(third[1]["online"], true, "{third}");
    let seen = ada_relay.sock.local_addr().unwrap().to_string();
    assert_eq!(third[1]["observed_addr"], seen.as_str(), "{third}");
    assert_eq!(
        ts.metric(RENDERS).await,
        before + 3,
        "reads after A's changes"
    );

    // Deleting A ends its stream.
    let (s, v) = ts
        .call(
            Method::DELETE,
            &format!("/api/sessions/{a}"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let end = tokio::time::timeout(Duration::from_secs(30), stream.read())
        .await
        .expect("the stream ends after the delete");
    assert_eq!(end, None, "an event after the delete");
}
