//! The editor: a small egui panel where a producer types the session address
//! and display name, joins or leaves, picks a peer found on the LAN, and sees
//! the connection state and every participant with its channel, role,
//! round-trip time, loss, recovered and late events. Its recording section
//! sets the capture folder and key file, switches the `record` parameter,
//! and shows whether a capture runs, its file, its event count and why one
//! could not start or ended early.
//!
//! A separate section joins a session by name through `jamd`: server URL,
//! session name, user and password (the password stays in this editor's
//! memory and is never saved), a Join and a Leave button, and the join's
//! state ([`crate::server`]); the participant table below shows the
//! members as for any session.
//!
//! It reads the engine through [`EngineControl`] (a lock that only the editor
//! and the worker take; the audio thread never does) and sets parameters
//! through the host's parameter setter.

use crate::params::{JamParams, read_field, write_field};
use crate::server::ServerState;
use crate::{EditorLink, display_name, key_file, update_capture_target};
use jam_engine::EngineControl;
use jam_engine::net::{ConnectionState, SessionAddress};
use nice_plug::context::gui::GuiContext;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    EguiEditor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp, RepaintNotifier,
    create_egui_editor,
};
use std::sync::Arc;

/// The editor type the plugin hands to the host.
pub type JamEditor = EguiEditor<SessionPanel>;

/// Editor window size in logical pixels.
pub const EDITOR_SIZE: (u32, u32) = (560, 420);

/// Builds the editor.
pub fn create(params: Arc<JamParams>, link: Arc<EditorLink>) -> Option<JamEditor> {
    let state = EguiEditorState::from_size(
        nice_plug::editor::dpi::LogicalSize::new(EDITOR_SIZE.0 as f64, EDITOR_SIZE.1 as f64),
        1.0,
    );
    let settings = EguiNiceSettings {
        title: "jam.togthr".to_string(),
        ..Default::default()
    };
    create_egui_editor(
        state,
        RepaintNotifier::new(),
        settings,
        SessionPanel {
            params,
            link,
            gui: None,
            address: String::new(),
            name: String::new(),
            listen: String::new(),
            error: None,
            browsing: false,
            server: ServerPanel::default(),
            capture_folder: String::new(),
            key_file: String::new(),
        },
    )
}

/// The session panel's state.
pub struct SessionPanel {
    params: Arc<JamParams>,
    link: Arc<EditorLink>,
    gui: Option<GuiContext>,
    /// Text being typed (saved to the persisted fields on join).
    address: String,
    name: String,
    /// Listen address being typed (saved when it changes; used from the
    /// next start of the engine).
    listen: String,
    /// Why the typed address was not accepted.
    error: Option<String>,
    /// True once LAN browsing was requested for this editor session.
    browsing: bool,
    // --- Capture (recording) ---
    /// Capture folder being typed (saved as it changes).
    capture_folder: String,
    /// Key file being typed (saved as it changes).
    key_file: String,
    /// The join-through-jamd section.
    server: ServerPanel,
}

/// The join-through-jamd section's text fields. The password lives here
/// only (cleared after each join), never in the plugin's saved state.
#[derive(Default)]
struct ServerPanel {
    url: String,
    session: String,
    user: String,
    password: String,
}

impl ServerPanel {
    fn load(&mut self, params: &JamParams) {
        self.url = read_field(&params.server);
        self.session = read_field(&params.server_session);
        self.user = read_field(&params.server_user);
    }

    /// Draws the section; Join saves the fields and hands the password to
    /// the join.
    fn ui(
        &mut self,
        ui: &mut egui::Ui,
        params: &JamParams,
        link: &Arc<EditorLink>,
        control: Option<&EngineControl>,
    ) {
        // Collapsed unless a server is set, to keep the window's size.
        egui::CollapsingHeader::new("Join a session by name through a jamd server")
            .default_open(!self.url.trim().is_empty())
            .show(ui, |ui| {
                egui::Grid::new("server").num_columns(2).show(ui, |ui| {
                    ui.label("Server");
                    ui.text_edit_singleline(&mut self.url)
                        .on_hover_text("http://host:port");
                    ui.end_row();
                    ui.label("Session name");
                    ui.text_edit_singleline(&mut self.session);
                    ui.end_row();
                    ui.label("User");
                    ui.text_edit_singleline(&mut self.user)
                        .on_hover_text("empty: your name");
                    ui.end_row();
                    ui.label("Password");
                    ui.add(egui::TextEdit::singleline(&mut self.password).password(true))
                        .on_hover_text("kept in memory only, never saved with the project");
                    ui.end_row();
                });
                if let Some(c) = control {
                    ui.horizontal(|ui| {
                        if ui.button("Join by name").clicked() {
                            write_field(&params.server, self.url.trim());
                            write_field(&params.server_session, self.session.trim());
                            write_field(&params.server_user, self.user.trim());
                            let password = std::mem::take(&mut self.password);
                            crate::server::join(params, c, link, password);
                        }
                        if ui.button("Leave").clicked() {
                            crate::server::leave(params, c, link);
                        }
                    });
                }
            });
        match link.server.state() {
            ServerState::Off => {}
            s @ ServerState::Failed(_) => {
                ui.colored_label(egui::Color32::LIGHT_RED, s.to_string());
            }
            s => {
                ui.label(s.to_string());
            }
        }
    }
}

// --- Capture (recording) ---------------------------------------------------

impl SessionPanel {
    /// The recording section: folder, key file, the record switch, and the
    /// capture's state.
    fn recording_ui(&mut self, ui: &mut egui::Ui, control: Option<&EngineControl>) {
        ui.separator();
        ui.strong("Recording");
        let mut changed = false;
        egui::Grid::new("recording").num_columns(2).show(ui, |ui| {
            ui.label("Capture folder");
            if ui
                .text_edit_singleline(&mut self.capture_folder)
                .on_hover_text("where sealed session captures (.scp) are written")
                .changed()
            {
                write_field(&self.params.capture_folder, self.capture_folder.trim());
                changed = true;
            }
            ui.end_row();
            ui.label("Key file");
            if ui
                .text_edit_singleline(&mut self.key_file)
                .on_hover_text("your secret key file (jam keys new); only its owner opens captures")
                .changed()
            {
                write_field(&self.params.key_file, self.key_file.trim());
                changed = true;
            }
            ui.end_row();
            if let Some(gui) = &self.gui {
                let setter = gui.param_setter();
                ui.label("Record");
                ui.add(ParamSlider::for_param(&self.params.record, &setter));
                ui.end_row();
            }
        });
        let Some(c) = control else { return };
        if changed {
            update_capture_target(&self.params, c);
        }
        let status = c.capture_status();
        let file = status
            .path
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string());
        if status.recording {
            ui.colored_label(
                egui::Color32::LIGHT_RED,
                format!("● recording {file} ({} events)", status.events),
            );
        } else if status.path.is_some() {
            ui.label(format!(
                "not recording; last: {file} ({} events)",
                status.events
            ));
        } else {
            ui.label("not recording");
        }
        if let Some(e) = &status.error {
            ui.colored_label(egui::Color32::LIGHT_RED, e);
        }
    }
}

// --- end of capture --------------------------------------------------------

impl SessionPanel {
    fn join(&mut self, control: &EngineControl, address: &str) {
        match address.parse::<SessionAddress>() {
            Ok(a) => {
                write_field(&self.params.session, address.trim());
                *self.link.joined.lock().unwrap_or_else(|e| e.into_inner()) =
                    address.trim().to_string();
                write_field(&self.params.display_name, self.name.trim());
                control.join(a, &display_name(&self.params), key_file(&self.params));
                // Captures are named after the session.
                update_capture_target(&self.params, control);
                self.error = None;
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

fn state_text(s: &ConnectionState) -> String {
    match s {
        ConnectionState::Idle => "not in a session".into(),
        ConnectionState::Connecting(a) => format!("joining {a}…"),
        ConnectionState::Connected(a) => format!("in session {a}"),
        ConnectionState::Failed(why) => format!("failed: {why}"),
        ConnectionState::Offline => "offline: the network side stopped".into(),
        other => format!("{other:?}"),
    }
}

impl NiceEguiApp for SessionPanel {
    fn build(
        &mut self,
        _egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        self.gui = Some(nice_gui_ctx);
        self.address = read_field(&self.params.session);
        self.name = read_field(&self.params.display_name);
        self.listen = read_field(&self.params.listen);
        self.server.load(&self.params);
        self.capture_folder = read_field(&self.params.capture_folder);
        self.key_file = read_field(&self.params.key_file);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        egui::ScrollArea::vertical().show(ui, |ui| self.panel_ui(ui));
    }

    fn editor_closed(&mut self) {
        if let (Some(c), true) = (self.link.control(), self.browsing) {
            c.browse_lan(false);
        }
        self.browsing = false;
        self.gui = None;
    }
}

impl SessionPanel {
    fn panel_ui(&mut self, ui: &mut egui::Ui) {
        // The figures change without any input: redraw a few times a second.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(250));
        let control = self.link.control();
        if let (Some(c), false) = (&control, self.browsing) {
            c.browse_lan(true);
            self.browsing = true;
        }
        ui.heading("jam.togthr");
        egui::Grid::new("session").num_columns(2).show(ui, |ui| {
            ui.label("Session");
            ui.text_edit_singleline(&mut self.address)
                .on_hover_text("host:port, ip:port, or lan:NAME");
            ui.end_row();
            ui.label("Your name");
            ui.text_edit_singleline(&mut self.name);
            ui.end_row();
            ui.label("Listen on");
            if ui
                .text_edit_singleline(&mut self.listen)
                .on_hover_text("ip:port to always listen on; empty: any free port (next start)")
                .changed()
            {
                write_field(&self.params.listen, self.listen.trim());
            }
            ui.end_row();
        });
        match self.link.listen() {
            Some(a) if a.ip().is_unspecified() => {
                ui.label(format!(
                    "Listening on port {} (invite this computer's address:{})",
                    a.port(),
                    a.port()
                ));
            }
            Some(a) => {
                ui.label(format!("Listening on {a}"));
            }
            None => {}
        }
        if let Some(p) = self.link.listen_problem() {
            ui.colored_label(egui::Color32::LIGHT_RED, p);
        }
        ui.horizontal(|ui| match &control {
            Some(c) => {
                if ui.button("Join").clicked() {
                    let a = self.address.clone();
                    self.join(c, &a);
                }
                if ui.button("Leave").clicked() {
                    c.leave();
                    // A session joined by name is left in jamd too.
                    crate::server::leave(&self.params, c, &self.link);
                }
                ui.label(state_text(&c.connection()));
            }
            None => {
                ui.label("The engine starts when the host activates the plugin.");
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::LIGHT_RED, e);
        }
        self.server
            .ui(ui, &self.params, &self.link, control.as_ref());
        if let Some(c) = &control {
            let lan = c.lan_peers();
            if !lan.is_empty() {
                ui.separator();
                ui.label("On this network:");
                for p in lan {
                    ui.horizontal(|ui| {
                        ui.label(format!("{} ({})", p.name, p.addr));
                        if ui.button("Join").clicked() {
                            self.address = format!("lan:{}", p.name);
                            let a = self.address.clone();
                            self.join(c, &a);
                        }
                    });
                }
            }
            ui.separator();
            let peers = c.peers();
            if peers.is_empty() {
                ui.label("No other participants.");
            } else {
                egui::Grid::new("peers").striped(true).show(ui, |ui| {
                    for h in ["Ch", "Name", "Role", "RTT", "Loss", "Recovered", "Late"] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for p in peers {
                        ui.label(format!("{}", p.slot + 1));
                        ui.label(&p.name);
                        ui.label(p.role.name());
                        ui.label(
                            p.rtt.map_or("–".into(), |d| {
                                format!("{:.1} ms", d.as_secs_f64() * 1e3)
                            }),
                        );
                        ui.label(format!("{:.1} %", p.loss() * 100.0));
                        ui.label(p.recovered.to_string());
                        ui.label(p.late.to_string());
                        ui.end_row();
                    }
                });
            }
        }
        if let Some(gui) = &self.gui {
            ui.separator();
            let setter = gui.param_setter();
            egui::Grid::new("params").num_columns(2).show(ui, |ui| {
                ui.label("Role");
                ui.add(ParamSlider::for_param(&self.params.role, &setter));
                ui.end_row();
                ui.label("Latency mode");
                ui.add(ParamSlider::for_param(&self.params.latency, &setter));
                ui.end_row();
                ui.label("Interval");
                ui.add(ParamSlider::for_param(&self.params.interval, &setter));
                ui.end_row();
                ui.label("Monitor");
                ui.add(ParamSlider::for_param(&self.params.monitor, &setter));
                ui.end_row();
                ui.label("Monitor level");
                ui.add(ParamSlider::for_param(&self.params.level, &setter));
                ui.end_row();
                ui.label("Send my notes");
                ui.add(ParamSlider::for_param(&self.params.send, &setter));
                ui.end_row();
            });
        }
        self.recording_ui(ui, control.as_ref());
    }
}
