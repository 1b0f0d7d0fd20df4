package tui

import (
	"context"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/colorprofile"
)

// pane is one of the dash's tabs.
type pane int

const (
	paneFunctions pane = iota
	paneRuns
	paneEvents
	paneCount
)

var paneNames = [paneCount]string{"Functions", "Runs", "Events"}

// Model is the dash: the header, the panes, the run detail and the dialogs
// over them, fed by the stream and the refreshes.
type Model struct {
	ctx    context.Context
	cancel context.CancelFunc
	src    Source
	opts   Options
	log    *slog.Logger
	st     styles
	// profile is the colour profile st draws with.
	profile colorprofile.Profile
	keys    keyMap
	help    help.Model

	width, height int

	header    headerModel
	functions functionsModel
	runs      runsModel
	events    eventsModel
	detail    *detailModel
	dialog    *dialogModel
	showHelp  bool
	pane      pane

	// The stream: the open feed, or since when it is down and why.
	feed      Feed
	downSince time.Time
	downErr   string

	// Refresh state: what is being read, and what needs reading again.
	fetchingStats, fetchingFns, fetchingRuns, fetchingDetail bool
	runsStale, detailStale                                   bool

	flash    string
	flashErr bool
}

// New builds the dash over src; nothing is read until the program starts
// it (Init).
func New(ctx context.Context, src Source, opts Options) *Model {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	m := &Model{
		ctx: ctx, cancel: cancel, src: src, opts: opts, log: opts.Logger.With("component", "dash"),
		keys: newKeyMap(), help: help.New(),
		width: 80, height: 24,
		header: headerModel{url: src.URL()},
		runs:   newRunsModel(),
		pane:   paneRuns,
		// Down until the first connection, so that the runs are polled.
		downSince: opts.Now(),
		runsStale: true,
	}
	m.setStyles(opts.Profile)
	return m
}

// setStyles draws the dash for a colour profile from now on.
func (m *Model) setStyles(profile colorprofile.Profile) {
	m.profile = profile
	m.st = newStyles(profile, !m.opts.Light)
	m.help.Styles = help.Styles{
		Ellipsis: m.st.dim, ShortKey: m.st.key, ShortDesc: m.st.dim, ShortSeparator: m.st.dim,
		FullKey: m.st.key, FullDesc: lipgloss.NewStyle(), FullSeparator: m.st.dim,
	}
	m.runs.setStyles(!m.opts.Light, m.st.plain)
	if m.detail != nil {
		m.detail.render(m.st, m.opts.Now())
	}
}

// stop ends every read in flight and the stream.
func (m *Model) stop() {
	m.cancel()
	if m.feed != nil {
		m.feed.Close()
		m.feed = nil
	}
}

// Init opens the stream and reads everything once.
func (m *Model) Init() tea.Cmd {
	cmds := []tea.Cmd{connect(m.ctx, m.src), m.refresh(), tick(m.opts.Refresh)}
	if m.opts.AskBackground {
		cmds = append(cmds, tea.RequestBackgroundColor)
	}
	return tea.Batch(cmds...)
}

// refresh reads what is due and not already being read: the stats and the
// functions always, the runs and events when stale or while the stream is
// down, the open run when it changed.
func (m *Model) refresh() tea.Cmd {
	var cmds []tea.Cmd
	if !m.fetchingStats {
		m.fetchingStats = true
		cmds = append(cmds, fetchStats(m.ctx, m.src))
	}
	if !m.fetchingFns {
		m.fetchingFns = true
		cmds = append(cmds, fetchFunctions(m.ctx, m.src))
	}
	if !m.fetchingRuns && (m.runsStale || m.feed == nil) {
		m.fetchingRuns, m.runsStale = true, false
		cmds = append(cmds, fetchRuns(m.ctx, m.src))
	}
	if m.detail != nil && (m.detailStale || m.feed == nil) {
		cmds = append(cmds, m.fetchDetail())
	}
	return tea.Batch(cmds...)
}

func (m *Model) fetchDetail() tea.Cmd {
	if m.fetchingDetail {
		m.detailStale = true
		return nil
	}
	m.fetchingDetail, m.detailStale = true, false
	return fetchDetail(m.ctx, m.src, m.detail.runID)
}

// Update applies a message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	now := m.opts.Now()
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.SetWidth(msg.Width)
		if m.detail != nil {
			m.detail.resize(m.width, m.bodyHeight(), m.st, now)
		}
		return m, nil
	case tea.ColorProfileMsg:
		// The profile Bubble Tea detected, when the options named none.
		if m.opts.Profile == colorprofile.Unknown {
			m.setStyles(msg.Profile)
		}
		return m, nil
	case tea.BackgroundColorMsg:
		// The terminal's answer to Init's question, whenever it comes.
		if m.opts.AskBackground && m.opts.Light == msg.IsDark() {
			m.opts.Light = !msg.IsDark()
			m.setStyles(m.profile)
		}
		return m, nil
	case tea.KeyPressMsg:
		var cmds []tea.Cmd
		for _, k := range oneKeyEach(msg) {
			cmds = append(cmds, m.key(k))
		}
		return m, tea.Batch(cmds...)
	case tea.PasteMsg:
		// A paste is text: for the filter, never commands.
		if m.runs.filtering && m.dialog == nil && m.pane == paneRuns && m.detail == nil {
			return m, m.runs.paste(msg)
		}
		return m, nil
	case tickMsg:
		return m, tea.Batch(m.refresh(), tick(m.opts.Refresh))
	case statsMsg:
		m.fetchingStats = false
		m.header.update(msg)
	case functionsMsg:
		m.fetchingFns = false
		m.functions.update(msg)
	case runsMsg:
		m.fetchingRuns = false
		if msg.err != nil {
			m.log.Warn("reading runs", "err", msg.err)
		}
		m.runs.update(msg)
		m.events.update(msg)
	case detailMsg:
		m.fetchingDetail = false
		if m.detail != nil {
			m.detail.update(msg, m.st, now)
			if m.detailStale {
				return m, m.fetchDetail()
			}
		}
	case connectedMsg:
		m.feed, m.downSince, m.downErr = msg.feed, time.Time{}, ""
		m.runsStale = true // changes made while down
		m.log.Info("stream connected")
		return m, tea.Batch(waitChanges(msg.feed), m.refresh())
	case changesMsg:
		if msg.feed != m.feed {
			return m, nil
		}
		m.applyChanges(msg)
		return m, tea.Batch(waitChanges(msg.feed), m.detailCmd())
	case streamEndedMsg:
		if m.feed != nil {
			m.feed.Close()
			m.feed = nil
		}
		if m.downSince.IsZero() {
			m.downSince = now
		}
		if msg.err != nil {
			m.downErr = explain(msg.err)
			m.log.Warn("stream down", "err", msg.err)
		}
		return m, reconnectAfter(reconnectDelay)
	case reconnectMsg:
		return m, connect(m.ctx, m.src)
	case actionMsg:
		m.flash, m.flashErr = msg.what, msg.err != nil
		if msg.err != nil {
			m.flash = strings.SplitN(msg.what, " ", 2)[0] + " failed: " + explain(msg.err)
			m.log.Warn("action failed", "action", msg.what, "err", msg.err)
		}
	default:
		if m.runs.filtering {
			var cmd tea.Cmd
			m.runs.input, cmd = m.runs.input.Update(msg)
			return m, cmd
		}
	}
	return m, nil
}

// applyChanges patches the panes with a batch of changes.
func (m *Model) applyChanges(msg changesMsg) {
	for _, c := range msg.changes {
		if c.Kind == "resync" {
			m.runsStale, m.detailStale = true, m.detail != nil
			continue
		}
		if m.runs.apply(c) {
			m.runsStale = true
		}
		m.events.apply(c)
		if m.detail != nil && c.RunID == m.detail.runID {
			m.detailStale = true
		}
	}
}

// detailCmd reads the open run again when it changed.
func (m *Model) detailCmd() tea.Cmd {
	if m.detail == nil || !m.detailStale {
		return nil
	}
	return m.fetchDetail()
}

// oneKeyEach splits a key press of several characters (Bubble Tea v1
// delivered printable keys typed fast, jj, ?q, 0/hello, as one such
// message; v2 delivers one message a character, but for a cluster of
// characters): each is a key of its own, which may change how the next is
// read (/ opens the filter, whose text follows). A paste is a message of
// its own (tea.PasteMsg), never split into keys.
func oneKeyEach(msg tea.KeyPressMsg) []tea.KeyPressMsg {
	runes := []rune(msg.Text)
	if len(runes) < 2 || msg.Mod&^tea.ModShift != 0 {
		return []tea.KeyPressMsg{msg}
	}
	keys := make([]tea.KeyPressMsg, len(runes))
	for i, r := range runes {
		keys[i] = keyPress(r)
	}
	return keys
}

// keyPress is the message of one typed character, as Bubble Tea makes it:
// an upper-case letter is its lower case with shift.
func keyPress(r rune) tea.KeyPressMsg {
	k := tea.KeyPressMsg{Code: r, Text: string(r)}
	if unicode.IsUpper(r) {
		k.Code, k.ShiftedCode, k.Mod = unicode.ToLower(r), r, tea.ModShift
	}
	return k
}

func (m *Model) key(msg tea.KeyPressMsg) tea.Cmd {
	k := m.keys
	if msg.String() == "ctrl+c" {
		return tea.Quit
	}
	if m.dialog != nil {
		cmd, done := m.dialog.key(k, msg)
		if done {
			m.dialog = nil
		}
		return cmd
	}
	if m.runs.filtering && m.pane == paneRuns && m.detail == nil {
		cmd, _ := m.runs.key(k, msg, m.bodyHeight())
		return cmd
	}
	if m.showHelp {
		if key.Matches(msg, k.Quit) && msg.String() == "q" {
			return tea.Quit
		}
		m.showHelp = false
		return nil
	}
	switch {
	case key.Matches(msg, k.Quit):
		return tea.Quit
	case key.Matches(msg, k.Help):
		m.showHelp = true
		return nil
	case key.Matches(msg, k.SendEvent):
		m.openSend()
		return nil
	}
	if m.detail != nil {
		return m.detailKey(msg)
	}
	switch {
	case key.Matches(msg, k.NextPane):
		m.pane = (m.pane + 1) % paneCount
		return nil
	case key.Matches(msg, k.PrevPane):
		m.pane = (m.pane + paneCount - 1) % paneCount
		return nil
	}
	page := m.bodyHeight() - 3
	switch m.pane {
	case paneFunctions:
		return m.functionsKey(msg, page)
	case paneEvents:
		return m.eventsKey(msg, page)
	default:
		return m.runsKey(msg, page)
	}
}

func (m *Model) functionsKey(msg tea.KeyPressMsg, page int) tea.Cmd {
	k := m.keys
	if c, ok := move(k, msg, m.functions.cursor, len(m.functions.fns), page); ok {
		m.functions.cursor = c
		return nil
	}
	fn, ok := m.functions.selected()
	if !ok {
		return nil
	}
	switch {
	case key.Matches(msg, k.Open):
		m.pane = paneRuns
		m.runs.setFilter(fn.ID)
	case key.Matches(msg, k.Invoke):
		if fn.Disabled != "" {
			m.flash, m.flashErr = fn.ID+" is disabled: "+fn.Disabled, true
			return nil
		}
		m.dialog = confirmDialog("Invoke "+fn.ID+"?", "Runs "+fn.ID+" now with {} as its event's data.", invokeCmd(m.ctx, m.src, fn.ID))
	}
	return nil
}

func (m *Model) eventsKey(msg tea.KeyPressMsg, page int) tea.Cmd {
	if c, ok := move(m.keys, msg, m.events.cursor, len(m.events.events), page); ok {
		m.events.cursor = c
		return nil
	}
	if ev, ok := m.events.selected(); ok && key.Matches(msg, m.keys.Open) {
		m.pane = paneRuns
		m.runs.setFilter(ev.InternalID)
	}
	return nil
}

func (m *Model) runsKey(msg tea.KeyPressMsg, page int) tea.Cmd {
	k := m.keys
	if cmd, ok := m.runs.key(k, msg, page); ok {
		return cmd
	}
	run, ok := m.runs.selected()
	if !ok {
		return nil
	}
	switch {
	case key.Matches(msg, k.Open):
		m.detail = newDetailModel(run.RunID, m.width, m.bodyHeight())
		m.detail.render(m.st, m.opts.Now())
		return m.fetchDetail()
	case key.Matches(msg, k.Rerun):
		m.confirmRerun(run.RunID, run.FunctionID)
	case key.Matches(msg, k.Cancel):
		m.confirmCancel(run.RunID, run.FunctionID, run.Status)
	}
	return nil
}

func (m *Model) detailKey(msg tea.KeyPressMsg) tea.Cmd {
	k := m.keys
	d := m.detail
	switch {
	case key.Matches(msg, k.Back):
		m.detail, m.detailStale = nil, false
	case key.Matches(msg, k.Rerun):
		fn := ""
		if d.run != nil {
			fn = d.run.FunctionID
		}
		m.confirmRerun(d.runID, fn)
	case key.Matches(msg, k.Cancel):
		status := ""
		fn := ""
		if d.run != nil {
			status, fn = d.run.Status, d.run.FunctionID
		}
		m.confirmCancel(d.runID, fn, status)
	case key.Matches(msg, k.Up):
		d.vp.ScrollUp(1)
	case key.Matches(msg, k.Down):
		d.vp.ScrollDown(1)
	case key.Matches(msg, k.PageUp):
		d.vp.PageUp()
	case key.Matches(msg, k.PageDown):
		d.vp.PageDown()
	case key.Matches(msg, k.Top):
		d.vp.GotoTop()
	case key.Matches(msg, k.Bottom):
		d.vp.GotoBottom()
	}
	return nil
}

func (m *Model) confirmRerun(id, fn string) {
	m.dialog = confirmDialog("Rerun "+shortID(id)+"?",
		"Starts a new run of "+fn+" with the same trigger event.\nrun "+id, rerunCmd(m.ctx, m.src, id))
}

func (m *Model) confirmCancel(id, fn, status string) {
	if status != "" && strings.Contains("Completed Failed Cancelled Skipped", status) {
		m.flash, m.flashErr = shortID(id)+" has already finished ("+status+")", true
		return
	}
	m.dialog = confirmDialog("Cancel "+shortID(id)+"?",
		"Cancels this run of "+fn+"; a worker executing it stops at its next step.\nrun "+id, cancelCmd(m.ctx, m.src, id))
}

func (m *Model) openSend() {
	if len(m.opts.Examples) == 0 {
		m.flash, m.flashErr = "no test events to send", true
		return
	}
	m.dialog = pickDialog(m.opts.Examples, func(ex Example) (string, tea.Cmd) {
		return examplePayload(ex), sendCmd(m.ctx, m.src, ex)
	})
}

// Layout: two header lines, the banner while the stream is down, the tabs,
// the body, and the footer.
func (m *Model) bodyHeight() int {
	h := m.height - 4
	if m.feed == nil && !m.downSince.IsZero() {
		h--
	}
	return max(h, 3)
}

// View draws the screen, on the alternate screen.
func (m *Model) View() tea.View {
	v := tea.NewView(m.screen())
	v.AltScreen = true
	return v
}

// screen is the text of the screen.
func (m *Model) screen() string {
	now := m.opts.Now()
	w := m.width
	parts := []string{m.header.view(m.st, w)}
	if m.feed == nil && !m.downSince.IsZero() {
		parts = append(parts, m.banner(now))
	}
	parts = append(parts, m.tabs(now))
	bh := m.bodyHeight()
	var body string
	switch {
	case m.dialog != nil:
		body = m.dialog.view(m.st, w, bh)
	case m.showHelp:
		body = m.st.title.Render("Keys") + "\n\n" + m.keys.helpView(m.st, w) + "\n\n" +
			m.st.dim.Render(wrap("Upper-case keys change the daemon and ask first. The stats are this daemon's own. Any key closes this help.", w))
	case m.detail != nil:
		if m.detail.vp.Width() != w || m.detail.vp.Height() != bh {
			m.detail.resize(w, bh, m.st, now)
		}
		body = m.detail.view()
	case m.pane == paneFunctions:
		body = m.functions.view(m.st, w, bh, now)
	case m.pane == paneEvents:
		body = m.events.view(m.st, &m.runs, w, bh, now)
	default:
		body = m.runs.view(m.st, w, bh, now)
	}
	parts = append(parts, block(body, w, bh), m.footer())
	return strings.Join(parts, "\n")
}

func (m *Model) banner(now time.Time) string {
	// Why first: a narrow screen cuts the end.
	text := " disconnected since " + m.downSince.Local().Format("15:04:05") + " (" + span(now.Sub(m.downSince)) + ")"
	if m.downErr != "" {
		text = " " + m.downErr + " ·" + text
	}
	text += " · reconnecting, polling every " + span(m.opts.Refresh)
	return m.st.banner.Render(cell(text, m.width))
}

func (m *Model) tabs(now time.Time) string {
	var ts []string
	for i, name := range paneNames {
		if pane(i) == m.pane && m.detail == nil {
			ts = append(ts, m.st.tabOn.Render("["+name+"]"))
		} else {
			ts = append(ts, m.st.tabOff.Render(" "+name+" "))
		}
	}
	if m.detail != nil {
		ts = append(ts, m.st.tabOn.Render("[Run "+shortID(m.detail.runID)+"]"))
	}
	left := strings.Join(ts, " ")
	right := m.flash
	switch {
	case right == "":
	case m.flashErr:
		right = m.st.errText.Render(right)
	default:
		right = m.st.flash.Render(right)
	}
	if right == "" && m.header.have {
		right = m.st.dim.Render("updated " + m.header.stats.At.Local().Format("15:04:05"))
	}
	gap := m.width - lipgloss.Width(left) - lipgloss.Width(right)
	if gap < 1 && m.detail == nil && m.flash != "" {
		// The message wins over the other tabs' names.
		left = m.st.tabOn.Render("[" + paneNames[m.pane] + "]")
		gap = m.width - lipgloss.Width(left) - lipgloss.Width(right)
	}
	if gap < 1 {
		return fit(left+" "+right, m.width)
	}
	return left + strings.Repeat(" ", gap) + right
}

func (m *Model) footer() string {
	if m.detail != nil {
		return fit(m.help.ShortHelpView([]key.Binding{m.keys.Back, m.keys.Up, m.keys.Down, m.keys.PageDown, m.keys.Rerun, m.keys.Cancel, m.keys.Help, m.keys.Quit}), m.width)
	}
	return fit(m.help.ShortHelpView(m.keys.ShortHelp()), m.width)
}
