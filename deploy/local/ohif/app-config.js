/** @type {AppTypes.Config} */
// Proxymage's configuration of the OHIF Viewer 3.13, installed over OHIF's own app-config.js by
// deploy/local/ohif.sh and served by the gateway at /viewer/app-config.js (no-store: a change here reaches
// the next page load). It runs as a classic script in index.html's <head>, before OHIF's bundle.
//
// The viewer opens one study from the console's link, /viewer/viewer?StudyInstanceUIDs=<uid>, and reads
// it through the gateway's read-only DICOMweb proxy at /dicom-web on the same origin: the session cookie
// goes along, no CORS, and the page's CSP (connect-src 'self') forbids every other server. Nothing here
// names an external URL: no CDN, no fonts, no analytics (OHIF 3.13 has no telemetry of its own).

// French by default. OHIF ships a French translation and picks the language with i18next's browser
// detector, whose order (OHIF's @ohif/i18n config) is: ?lng= in the URL, the `i18next` cookie, then
// localStorage `i18nextLng`, then the browser's languages. There is no app-config option for it, so the
// first visit stores French where the detector looks; a user who then picks another language in OHIF's
// preferences keeps it (the detector caches the choice in both places), and ?lng=en-US overrides once.
(function preferFrench() {
  try {
    var chosen = window.localStorage.getItem('i18nextLng') || /(?:^|;\s*)i18next=/.test(document.cookie);
    if (!chosen) {
      window.localStorage.setItem('i18nextLng', 'fr');
    }
  } catch (error) {
    // Storage disabled by the browser's policy: the browser's own language applies.
  }
})();

window.config = {
  name: 'proxymage',
  // Served under /viewer/ by the gateway; the install rewrote OHIF's root paths to match.
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  // No onboarding tour: OHIF's 11-step tour would cover the images at every new meeting-room session (its
  // "seen" flag lives in the browser's storage). A global customization takes precedence over the mode's.
  customizationService: [{ 'ohif.tours': { $set: [] } }],
  // Only the viewer route: the DICOMweb proxy serves the studies of the meetings, the board opens them
  // from the console, and a study list would be a second way in to browse the whole store.
  showStudyList: false,
  // OHIF's "investigational use only" banner is not shown (issue 10): whether this viewer may serve the
  // board is the site's decision, taken once (OHIF is not a certified medical device), not a banner
  // to dismiss on the meeting room's screen at every session. 'never' is OHIF 3.13's option value.
  investigationalUseDialog: { option: 'never' },
  // some windows systems have issues with more than 3 web workers (OHIF's default)
  maxNumberOfWebWorkers: 3,
  // Same origin: the cross-origin performance warning would never apply.
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  allowMultiSelectExport: false,
  maxNumRequests: {
    interaction: 100,
    thumbnail: 5,
    // The gateway is reached over HTTP/1.1 locally: a browser opens at most 6 connections per origin.
    prefetch: 10,
  },
  // The stack trace button of OHIF's error page helps no one in a meeting room.
  showErrorDetails: 'dev',
  // Left undefined on purpose (OHIF's secure default): `customizationUrlPrefixes` (loading customizations
  // named in the URL) and `dangerouslyUseDynamicConfig` (loading a configuration named in the URL).
  defaultDataSourceName: 'proxymage',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'proxymage',
      configuration: {
        friendlyName: 'Proxymage',
        name: 'proxymage',
        // The gateway's read-only DICOMweb proxy (Orthanc's DICOMweb paths), same origin.
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        // No `includefield=all`: OHIF names the few extra tags it lists (Orthanc honours `includefield`).
        qidoSupportsIncludeField: false,
        // Pixels by WADO-RS frames (/frames/N), thumbnails drawn from the same frames: one route to proxy,
        // no server-side rendering.
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        // Series metadata is fetched when a series is displayed, not the whole study up front.
        enableStudyLazyLoad: true,
        // The gateway's DICOMweb path takes exact study queries only (a StudyInstanceUID or one exact
        // PatientID, no `*` or `?`: no listing by pattern), and Orthanc has no fuzzy matching.
        supportsWildcard: false,
        supportsFuzzyMatching: false,
        // Orthanc is a full DICOMweb server, not a static file tree.
        staticWado: false,
        // Read-only: no rejection (delete) of series, no upload (STOW-RS) — the proxy allows GETs only.
        supportsReject: false,
        dicomUploadEnabled: false,
        // Accept: multipart/related; type=application/octet-stream (unquoted), as OHIF's own Orthanc
        // configuration sends it; Orthanc DICOMweb 1.7 answers it (checked in Chromium through a proxy).
        omitQuotationForMultipartRequest: true,
        // Orthanc writes BulkDataURIs as absolute URLs built from the Host it was asked on, e.g.
        // http://127.0.0.1:18043/dicom-web/studies/.../bulk/7fe00010: behind the gateway that names Orthanc
        // itself (another origin, refused by the CSP) or the gateway over http. `transform` keeps the path
        // from Orthanc's `/dicom-web/` on, so every bulk data request goes to the same-origin proxy; the
        // identity `startsWith`/`prefixWith` pair is what makes OHIF 3.13's fixBulkDataURI store the
        // transformed value (it only writes it back on a `startsWith` match).
        bulkDataURI: {
          enabled: true,
          relativeResolution: 'series',
          transform: url => url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]+\/(?:[^?#]*?\/)?dicom-web\//i, '/dicom-web/'),
          startsWith: '/dicom-web/',
          prefixWith: '/dicom-web/',
        },
      },
    },
  ],
  httpErrorHandler: error => {
    // OHIF's default points the user at ohif.org; a failed DICOMweb call (session expired, study purged)
    // is logged for support and shown by OHIF's own error display.
    console.warn('DICOMweb error', error && error.status);
  },
};
