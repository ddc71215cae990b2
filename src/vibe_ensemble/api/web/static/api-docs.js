// Starts Swagger UI on /api/v1/docs. Everything it loads comes from this server: the bundle and
// its styles from the swagger-ui-bundle package, the API description from /api/v1/openapi.json.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no badge fetched from another site
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
